#!/usr/bin/env python3
"""A stand-in for ModemManager's `mmcli`, for the agent's [lte] tests.

ModemManager needs a real modem (and udev) and cannot run here, so this
prints what mmcli prints, as its source does it (ModemManager 1.20+,
cli/mmcli-output.c `dump_output_keyvalue`, cli/mmcli-modem.c,
cli/mmcli-modem-signal.c `print_signal_info`, cli/mmcli-common.c):

- `-m SEL -K`: the modem's fields, one `KEY : VALUE` line each, in mmcli's
  field order, keys left-justified to the longest key (a list field's
  `.value[N]` keys count in that width), values escaped like GLib's
  g_strescape, `--` for a field without a value, lists as `KEY.length`
  then `KEY.value[1]`...;
- `-m SEL --signal-get -K`: `modem.signal.refresh.rate` (%u) and each
  radio's figures as `%.2f`, `--` when unknown (and every figure unknown
  while the rate is 0: ModemManager does not poll);
- `-m SEL --signal-setup=N`: sets the rate, prints mmcli's success line;
- errors on stderr with exit status 1: no ModemManager on the bus, no
  modem matching SEL (`any`, an index, or a D-Bus path).

The modem's state is a JSON file named by SITEWATCH_MMCLI_STATE, read on
every call so a test can change it between rounds:
  {"daemon": true, "modems": [{"state": "connected", "tech": ["lte"],
   "quality": 72, "operator": "Telkomsel", "registration": "home",
   "rate": 0, "lte": {"rssi": -60, "rsrq": -9, "rsrp": -85, "snr": 12.5}}]}
Each call is appended to the file named by SITEWATCH_MMCLI_LOG, if set.
"""
import json
import os
import sys

PATH = "/org/freedesktop/ModemManager1/Modem/"


def escape(value):
    """g_strescape (glib/gstrfuncs.c) with no exceptions."""
    out = []
    for b in value.encode("utf-8"):
        c = chr(b)
        if c == "\b":
            out.append("\\b")
        elif c == "\f":
            out.append("\\f")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\v":
            out.append("\\v")
        elif c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif b < 0x20 or b >= 0x7F:
            out.append("\\%03o" % b)
        else:
            out.append(c)
    return "".join(out)


def dump(items):
    """dump_output_keyvalue: items are (key, str or None) or (key, list)."""
    width = 0
    for key, value in items:
        n = len(key)
        if isinstance(value, list) and value:
            n += len(".value") + 3 + (1 if len(value) > 10 else 0)
        width = max(width, n)
    lines = []
    for key, value in items:
        if isinstance(value, list):
            if value:
                lines.append("%-*.*s : %u" % (width, width, key + ".length", len(value)))
                for i, v in enumerate(value):
                    lines.append("%-*.*s : %s" % (width, width, "%s.value[%u]" % (key, i + 1), escape(v)))
            else:
                lines.append("%-*.*s : --" % (width, width, key))
        else:
            lines.append("%-*.*s : %s" % (width, width, key, escape(value) if value else "--"))
    sys.stdout.write("".join(line + "\n" for line in lines))


def fail(message):
    sys.stderr.write("error: %s\n" % message)
    sys.exit(1)


def main(argv):
    log = os.environ.get("SITEWATCH_MMCLI_LOG")
    if log:
        with open(log, "a") as f:
            f.write(" ".join(argv) + "\n")
    state_file = os.environ["SITEWATCH_MMCLI_STATE"]
    with open(state_file) as f:
        state = json.load(f)
    if len(argv) < 3 or argv[0] != "-m":
        fail("this stand-in knows only -m SEL -K, --signal-get -K, --signal-setup=N")
    sel, args = argv[1], argv[2:]
    if not state.get("daemon", True):
        fail("couldn't find the ModemManager process in the bus")
    modems = state.get("modems", [])
    index = None
    if sel == "any":
        index = 0 if modems else None
    else:
        n = sel[len(PATH):] if sel.startswith(PATH) else sel
        if n.isdigit() and int(n) < len(modems):
            index = int(n)
    if index is None:
        fail("couldn't find modem")
    m = modems[index]
    if args == ["-K"]:
        failed = m.get("state") == "failed"
        dump([
            ("modem.dbus-path", PATH + str(index)),
            ("modem.generic.device-identifier", "2c2cf8e9f6e5d4a3b2c1d0e9f8a7b6c5d4e3f2a1"),
            ("modem.generic.manufacturer", "QUALCOMM INCORPORATED"),
            ("modem.generic.model", "SIMCOM_SIM7600G-H"),
            ("modem.generic.revision", "LE20B04SIM7600G22"),
            ("modem.generic.unlock-required", "sim-pin" if m.get("state") == "locked" else "--"),
            ("modem.generic.state", m.get("state", "unknown")),
            ("modem.generic.state-failed-reason", m.get("failed_reason", "sim-missing") if failed else None),
            ("modem.generic.power-state", "on"),
            ("modem.generic.access-technologies", m.get("tech", [])),
            ("modem.generic.signal-quality.value", "%u" % m.get("quality", 0)),
            ("modem.generic.signal-quality.recent", "yes"),
            ("modem.3gpp.imei", "862636051234567"),
            ("modem.3gpp.operator-code", m.get("operator_code")),
            ("modem.3gpp.operator-name", m.get("operator")),
            ("modem.3gpp.registration-state", m.get("registration")),
        ])
    elif args == ["--signal-get", "-K"]:
        rate = m.get("rate", 0)

        def fig(radio, name):
            v = m.get(radio, {}).get(name) if rate else None
            return None if v is None else "%.2f" % v

        dump([("modem.signal.refresh.rate", "%u" % rate)] + [
            ("modem.signal.%s.%s" % (radio, name), fig(radio, name))
            for radio, names in [
                ("cdma1x", ["rssi", "ecio"]),
                ("evdo", ["rssi", "ecio", "sinr", "io"]),
                ("gsm", ["rssi"]),
                ("umts", ["rssi", "rscp", "ecio"]),
                ("lte", ["rssi", "rsrq", "rsrp", "snr"]),
                ("5g", ["rsrq", "rsrp", "snr"]),
            ]
            for name in names
        ])
    elif len(args) == 1 and args[0].startswith("--signal-setup="):
        rate = args[0].split("=", 1)[1]
        if not rate.isdigit():
            sys.stderr.write("error: invalid rate value '%s'" % rate)
            sys.exit(1)
        m["rate"] = int(rate)
        with open(state_file, "w") as f:
            json.dump(state, f)
        print("Successfully setup extended signal information retrieval")
    else:
        fail("this stand-in knows only -m SEL -K, --signal-get -K, --signal-setup=N")


if __name__ == "__main__":
    main(sys.argv[1:])
