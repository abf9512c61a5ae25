#!/usr/bin/python3
"""A real RTSP server for sitewatch's probe tests: GStreamer's gst-rtsp-server
through Python GI (Debian: python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-{base,good,ugly,bad}). Run it with /usr/bin/python3
(a pyenv python3 cannot import gi).

Binds 127.0.0.1 only. With --port 0 the kernel picks a free port. When ready
it prints one line on stdout and flushes it:

    READY port=PORT blackhole=PORT

Mounts (each client gets its own pipeline: shared media made RTP timestamps
jump for earlier clients when another joined):

    /cam1         H.264 640x360 25 fps, keyframe every 2 s
    /cam1h265     H.265, open GOP (CRA keyframes after the first IDR)
    /cam1h265idr  H.265, closed GOP (IDR keyframes)
    /lowfps       H.264 2 fps
    /stall        H.264 that stops after 3 s (EOS; the connection stays open)
    /frozen       H.264 whose RTP timestamps never advance (a hung encoder)
    /audio        audio only (PCMU), no video track
    /noframes     H.264 whose RTP packets leave with payload type 50 (the
                  SDP says 96), which clients drop (retina skips pt 50, the
                  junk some Geovision cameras send): PLAY is answered,
                  packets flow, no frame
    /secure       like /cam1, needs --user/--password with --auth digest|basic
    anything else 404

A stream that plays but never sends a buffer is not possible here: this
server answers PLAY only once a buffer flows after it (and blocks its main
loop until then), so such attempts gave `rtsp_timeout` or `stalled`.
/noframes gets the same symptom (PLAY answered, no frame) by sending
packets the client must drop.

The blackhole port accepts TCP connections and never answers.
"""

import argparse
import signal
import socket
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

SIZE = "width=640,height=360"


def h264(fps, extra=""):
    gop = max(1, fps * 2)
    return (
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,{SIZE},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast bitrate=256 key-int-max={gop} "
        f'option-string="scenecut=0" {extra} ! rtph264pay name=pay0 pt=96 config-interval=1'
    )


def h265(open_gop):
    opts = "open-gop=1:scenecut=0" if open_gop else "open-gop=0:scenecut=0"
    return (
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,{SIZE},framerate=25/1 "
        f"! x265enc speed-preset=ultrafast bitrate=256 key-int-max=50 "
        f'option-string="{opts}" ! rtph265pay name=pay0 pt=96 config-interval=1'
    )


MOUNTS = {
    "/cam1": h264(25),
    "/cam1h265": h265(True),
    "/cam1h265idr": h265(False),
    "/lowfps": h264(2),
    "/stall": h264(25).replace("is-live=true", "is-live=true num-buffers=75"),
    "/frozen": h264(25).replace("! rtph264pay", "! identity name=freeze ! rtph264pay"),
    "/audio": "audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 ! mulawenc "
    "! rtppcmupay name=pay0 pt=0",
    "/secure": h264(25),
    "/noframes": h264(25),
}


def freeze_timestamps(_factory, media):
    """/frozen: every buffer gets the first buffer's PTS, so the RTP
    timestamp stands still while frames keep arriving in real time."""
    ident = media.get_element().get_by_name("freeze")
    first = {}

    def probe(_pad, info):
        buf = info.get_buffer()
        if "pts" not in first:
            first["pts"] = buf.pts
        # In place: the buffer is ours alone (one pipeline per client).
        buf.pts = first["pts"]
        buf.dts = Gst.CLOCK_TIME_NONE
        return Gst.PadProbeReturn.OK

    ident.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)


def payload_type_50(_factory, media):
    """/noframes: each RTP packet leaves with payload type 50 (the SDP
    still says 96: gst-rtsp-server renumbers a payloader's pt property,
    so the header is rewritten after it). Buffers keep flowing, so PLAY is
    answered; a client drops every packet."""
    pad = media.get_element().get_by_name("pay0").get_static_pad("src")

    def probe(pad, info):
        buf = info.get_buffer()
        head = buf.extract_dup(0, 2)
        if len(head) < 2 or head[1] & 0x7F == 50:
            return Gst.PadProbeReturn.OK  # rewritten already
        data = bytearray(buf.extract_dup(0, buf.get_size()))
        data[1] = (data[1] & 0x80) | 50
        out = Gst.Buffer.new_wrapped(bytes(data))
        out.pts, out.dts, out.duration = buf.pts, buf.dts, buf.duration
        out.set_flags(buf.get_flags())
        pad.push(out)  # comes back through this probe, passes as pt 50
        return Gst.PadProbeReturn.DROP

    pad.add_probe(Gst.PadProbeType.BUFFER, probe)


def blackhole():
    """Accepts connections and holds them without a byte of reply."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    held = []

    def loop():
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            held.append(conn)
            if len(held) > 256:
                held.pop(0).close()

    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def permissions(anonymous_construct):
    p = GstRtspServer.RTSPPermissions()
    p.add_role("user")
    p.add_permission_for_role("user", "media.factory.access", True)
    p.add_permission_for_role("user", "media.factory.construct", True)
    # Anonymous users may always *see* a factory: without access the server
    # answers 404 instead of challenging with 401.
    p.add_role("anonymous")
    p.add_permission_for_role("anonymous", "media.factory.access", True)
    p.add_permission_for_role("anonymous", "media.factory.construct", anonymous_construct)
    return p


def token(role):
    t = GstRtspServer.RTSPToken()
    t.set_string("media.factory.role", role)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--auth", choices=["digest", "basic"], default="digest")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="secret123")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    auth = GstRtspServer.RTSPAuth()
    if args.auth == "digest":
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        auth.add_digest(args.user, args.password, token("user"))
    else:
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token("user"))
    auth.set_default_token(token("anonymous"))
    server.set_auth(auth)

    mounts = server.get_mount_points()
    for path, launch in MOUNTS.items():
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(f"( {launch} )")
        f.set_shared(False)
        f.set_permissions(permissions(path != "/secure"))
        if path == "/frozen":
            f.connect("media-configure", freeze_timestamps)
        if path == "/noframes":
            f.connect("media-configure", payload_type_50)
        mounts.add_factory(path, f)

    if server.attach(None) == 0:
        print("error: cannot attach the RTSP server", file=sys.stderr)
        return 1
    hole = blackhole()
    print(f"READY port={server.get_bound_port()} blackhole={hole}", flush=True)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
