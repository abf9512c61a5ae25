#!/usr/bin/env python3
"""A stand-in ONVIF camera for `sitewatch-agent discover`'s tests (stdlib
only). It speaks what the agent asks and answers as ONVIF devices do:

  - WS-Discovery 2005/04 over SOAP-over-UDP: joins 239.255.255.250:3702 on
    --bind, answers a Probe whose Types name dn:NetworkVideoTransmitter
    (any prefix) with a unicast ProbeMatches. Shape: ONVIF Core
    Specification §7.3 and the ProbeMatches example of the ONVIF
    Application Programmer's Guide §5.1 (Axis device,
    urn:uuid:a1f48ac2-dc8b-11df-b255-00408c1836b2), which lumeohq/onvif-rs
    also parses in its tests.
  - The device service (POST /onvif/device_service): GetCapabilities,
    whose Capabilities/Media/XAddr names the media service.
  - The media service ver10 (POST /onvif/media_service): GetProfiles (two
    profiles: 1920x1080 H264 and 640x360 H264, out of order so the client
    must sort) and GetStreamUri (RTP-Unicast/RTSP), whose URIs point at
    --rtsp (the GStreamer fixture): main -> /secure, sub -> /cam1h265idr.
  - WS-Security UsernameToken: the PasswordDigest is checked exactly
    (Base64(SHA-1(nonce + created + password)), WS-Security UsernameToken
    Profile 1.0 §3.1), and Created must be within 5 s of this clock (ONVIF
    Core §5.12.2.1 leaves the window to the device; 5 s is common). A
    wrong, stale or missing token on a READ_MEDIA operation gets the
    fault ONVIF Core §5.11.2.4 lists: env:Sender / ter:NotAuthorized,
    "Sender not Authorized", with HTTP 400 (--fault-status 401 for the
    many devices that send 401 instead). GetCapabilities is PRE_AUTH
    (ONVIF Core §5.12.1, access classes) and answers without a token.
  - --http-digest: answer a request without an Authorization header with
    HTTP 401 and a Digest challenge first (RFC 7616 MD5, qop=auth), as
    some NVRs do; the Digest response is checked too.

When ready it prints `READY http=PORT` on stdout and flushes it.
"""

import argparse
import base64
import datetime
import hashlib
import http.server
import os
import re
import socket
import struct
import sys
import threading
import xml.etree.ElementTree as ET

GROUP = "239.255.255.250"
PORT = 3702
NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
UUID = "urn:uuid:a1f48ac2-dc8b-11df-b255-00408c1836b2"


def local(tag):
    return tag.rsplit("}", 1)[-1]


def find(root, name):
    for el in root.iter():
        if local(el.tag) == name:
            return el
    return None


def text(root, name):
    el = find(root, name)
    return (el.text or "").strip() if el is not None else ""


def probe_matches(relates_to, xaddr, name):
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_SOAP}" xmlns:wsa="{NS_WSA}" xmlns:d="{NS_WSD}" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<SOAP-ENV:Header>
<wsa:MessageID>uuid:84ede3de-e374-11df-b259-00408c1836b2</wsa:MessageID>
<wsa:RelatesTo>{relates_to}</wsa:RelatesTo>
<wsa:To SOAP-ENV:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>
<wsa:Action SOAP-ENV:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>
<d:AppSequence SOAP-ENV:mustUnderstand="true" MessageNumber="3" InstanceId="1287607812"></d:AppSequence>
</SOAP-ENV:Header>
<SOAP-ENV:Body>
<d:ProbeMatches>
<d:ProbeMatch>
<wsa:EndpointReference><wsa:Address>{UUID}</wsa:Address></wsa:EndpointReference>
<d:Types>dn:NetworkVideoTransmitter</d:Types>
<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/type/audio_encoder onvif://www.onvif.org/hardware/MODEL onvif://www.onvif.org/name/{name} onvif://www.onvif.org/location/ANY</d:Scopes>
<d:XAddrs>http://169.254.76.145/onvif/device_service {xaddr}</d:XAddrs>
<d:MetadataVersion>1</d:MetadataVersion>
</d:ProbeMatch>
</d:ProbeMatches>
</SOAP-ENV:Body>
</SOAP-ENV:Envelope>"""


def envelope(body):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<env:Envelope xmlns:env="{NS_SOAP}" xmlns:tt="http://www.onvif.org/ver10/schema" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
        'xmlns:ter="http://www.onvif.org/ver10/error">'
        f"<env:Body>{body}</env:Body></env:Envelope>"
    )


NOT_AUTHORIZED = envelope(
    "<env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode>"
    "<env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code>"
    '<env:Reason><env:Text xml:lang="en">Sender not Authorized</env:Text></env:Reason></env:Fault>'
)


def profile(token, name, w, h):
    return (
        f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{name}</tt:Name>'
        f'<tt:VideoSourceConfiguration token="VideoSource_1"><tt:Name>VideoSource_1</tt:Name>'
        f"<tt:UseCount>2</tt:UseCount><tt:SourceToken>VideoSource_1</tt:SourceToken>"
        f'<tt:Bounds x="0" y="0" width="1920" height="1080"></tt:Bounds></tt:VideoSourceConfiguration>'
        f'<tt:VideoEncoderConfiguration token="VideoEncoder_{token}"><tt:Name>{name}</tt:Name>'
        f"<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>"
        f"<tt:Resolution><tt:Width>{w}</tt:Width><tt:Height>{h}</tt:Height></tt:Resolution>"
        f"<tt:Quality>3</tt:Quality><tt:RateControl><tt:FrameRateLimit>25</tt:FrameRateLimit>"
        f"<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit></tt:RateControl>"
        f"<tt:H264><tt:GovLength>50</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264>"
        f"<tt:SessionTimeout>PT5S</tt:SessionTimeout></tt:VideoEncoderConfiguration></trt:Profiles>"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True, help="IPv4 address of this namespace's interface")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", required=True)
    ap.add_argument("--rtsp", required=True, help="rtsp://host:port of the RTSP fixture")
    ap.add_argument("--name", default="VENDOR%20MODEL", help="name scope (percent-encoded)")
    ap.add_argument("--fault-status", type=int, default=400)
    ap.add_argument("--http-digest", action="store_true")
    args = ap.parse_args()
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    def token_ok(root):
        user = text(root, "Username")
        pw_el = find(root, "Password")
        nonce, created = text(root, "Nonce"), text(root, "Created")
        if pw_el is None or not nonce or not created or user != args.user:
            return False
        if not (pw_el.get("Type") or "").endswith("#PasswordDigest"):
            return False
        try:
            when = datetime.datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=datetime.timezone.utc
            )
            raw = base64.b64decode(nonce, validate=True)
        except ValueError:
            return False
        now = datetime.datetime.now(datetime.timezone.utc)
        if abs((now - when).total_seconds()) > 5:
            log("token: Created out of the 5 s window:", created)
            return False
        want = base64.b64encode(
            hashlib.sha1(raw + created.encode() + args.password.encode()).digest()
        ).decode()
        return want == (pw_el.text or "").strip()

    realm, nonce = "onvif-standin", os.urandom(8).hex()

    def digest_ok(header, method, uri):
        if not header.startswith("Digest "):
            return False
        p = dict(re.findall(r'(\w+)="?([^",]*)"?', header[7:]))
        if p.get("username") != args.user or p.get("nonce") != nonce or p.get("uri") != uri:
            return False
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
        ha1, ha2 = md5(f"{args.user}:{realm}:{args.password}"), md5(f"{method}:{uri}")
        want = md5(f"{ha1}:{nonce}:{p.get('nc')}:{p.get('cnonce')}:{p.get('qop')}:{ha2}")
        return p.get("response") == want

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            log("http:", fmt % a)

        def send(self, status, body, extra=()):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
            for k, v in extra:
                self.send_header(k, v)
            if status == 200 and self.path.endswith("media_service"):
                # Chunked, as gSOAP-based firmware often answers.
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(data), 700):
                    part = data[i : i + 700]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            self.close_connection = True

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(n)
            if args.http_digest and not digest_ok(
                self.headers.get("Authorization", ""), "POST", self.path
            ):
                challenge = f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5'
                return self.send(401, "", [("WWW-Authenticate", challenge)])
            try:
                root = ET.fromstring(raw)
            except ET.ParseError:
                return self.send(400, "")
            body = find(root, "Body")
            op = local(body[0].tag) if body is not None and len(body) else ""
            has_token = find(root, "UsernameToken") is not None
            authed = has_token and token_ok(root)
            log("soap:", self.path, op, "token" if has_token else "no token", "ok" if authed else "")
            if has_token and not authed or not has_token and op != "GetCapabilities":
                return self.send(args.fault_status, NOT_AUTHORIZED)
            host = f"{args.bind}:{self.server.server_address[1]}"
            if self.path == "/onvif/device_service" and op == "GetCapabilities":
                return self.send(200, envelope(
                    "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Media>"
                    f"<tt:XAddr>http://{host}/onvif/media_service</tt:XAddr>"
                    "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast>"
                    "<tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
                    "</tt:StreamingCapabilities></tt:Media></tds:Capabilities></tds:GetCapabilitiesResponse>"
                ))
            if self.path == "/onvif/media_service" and op == "GetProfiles":
                return self.send(200, envelope(
                    "<trt:GetProfilesResponse>"
                    + profile("Profile_2", "subStream", 640, 360)
                    + profile("Profile_1", "mainStream", 1920, 1080)
                    + "</trt:GetProfilesResponse>"
                ))
            if self.path == "/onvif/media_service" and op == "GetStreamUri":
                token = text(root, "ProfileToken")
                path = {"Profile_1": "secure", "Profile_2": "cam1h265idr"}.get(token)
                if path is None or text(root, "Protocol") != "RTSP" or text(root, "Stream") != "RTP-Unicast":
                    return self.send(400, NOT_AUTHORIZED.replace("NotAuthorized", "InvalidArgVal"))
                return self.send(200, envelope(
                    "<trt:GetStreamUriResponse><trt:MediaUri>"
                    f"<tt:Uri>{args.rtsp}/{path}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
                    "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
                    "</trt:MediaUri></trt:GetStreamUriResponse>"
                ))
            return self.send(400, NOT_AUTHORIZED.replace("NotAuthorized", "ActionNotSupported"))

    httpd = http.server.ThreadingHTTPServer((args.bind, 0), Handler)
    xaddr = f"http://{args.bind}:{httpd.server_address[1]}/onvif/device_service"

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind(("", PORT))
    mreq = struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton(args.bind))
    udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)

    def discovery():
        while True:
            data, peer = udp.recvfrom(65536)
            try:
                root = ET.fromstring(data)
            except ET.ParseError:
                continue
            types = text(root, "Types")
            if find(root, "Probe") is None or "NetworkVideoTransmitter" not in types:
                continue
            log("probe from", peer)
            udp.sendto(probe_matches(text(root, "MessageID"), xaddr, args.name).encode(), peer)

    threading.Thread(target=discovery, daemon=True).start()
    print(f"READY http={httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
