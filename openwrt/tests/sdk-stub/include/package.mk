# Test stand-in for an OpenWrt SDK's include/package.mk. BuildPackage
# makes one target, sw-install, that runs Build/Prepare, Build/Compile and
# Package/<name>/install into $(IDIR), and sw-info, which prints the
# package's metadata. Not OpenWrt's code.
PKG_BUILD_DIR ?= $(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)

define BuildPackage
.PHONY: sw-install sw-info
sw-install:
	$$(Build/Prepare)
	$$(Build/Configure)
	$$(Build/Compile)
	$$(call Package/$(1)/install,$$(IDIR))

sw-info:
	@echo "name=$(PKG_NAME) version=$(PKG_VERSION)-$(PKG_RELEASE)"
	@echo "triple=$$(SITEWATCH_TRIPLE)"
	@echo 'conffiles=$$(strip $$(Package/$(1)/conffiles))'
endef
