# Test stand-in for an OpenWrt SDK's rules.mk: just enough for
# openwrt/Makefile to be evaluated and its recipes run (see
# scripts/test-packaging.sh). Not OpenWrt's code.
BUILD_DIR ?= /tmp/sitewatch-sdk-stub/build
INSTALL_DIR := install -d -m0755
INSTALL_BIN := install -m0755
INSTALL_DATA := install -m0644
INSTALL_CONF := install -m0600
