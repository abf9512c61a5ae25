//! ONVIF messages, built and read without I/O: the WS-Discovery Probe and
//! its ProbeMatches, WS-Security UsernameToken (PasswordDigest), the
//! device service's GetCapabilities and the media service's GetProfiles
//! and GetStreamUri, SOAP faults, and the `[[rtsp.camera]]` blocks
//! printed from the answers.
//!
//! Message shapes: WS-Discovery (2005/04) as ONVIF Core Specification
//! §7.3 profiles it; the Probe, ProbeMatches and UsernameToken examples
//! of the ONVIF Application Programmer's Guide (§5.1, §6.1.1.3); the
//! media service WSDL ver10 (`http://www.onvif.org/ver10/media/wsdl`).

use std::fmt::Write as _;

use super::xml::{Doc, XmlError};

/// WS-Discovery multicast group and port (SOAP-over-UDP).
pub const MULTICAST: std::net::SocketAddrV4 =
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(239, 255, 255, 250), 3702);

const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
const NS_WSA: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
const NS_WSD: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
const NS_DN: &str = "http://www.onvif.org/ver10/network/wsdl";
const NS_TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
const NS_TT: &str = "http://www.onvif.org/ver10/schema";
const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const NS_WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const PASSWORD_DIGEST: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
const BASE64_BINARY: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// SOAP actions (the `action` parameter of the HTTP Content-Type).
pub const ACTION_GET_CAPABILITIES: &str = "http://www.onvif.org/ver10/device/wsdl/GetCapabilities";
/// GetProfiles of the media service ver10.
pub const ACTION_GET_PROFILES: &str = "http://www.onvif.org/ver10/media/wsdl/GetProfiles";
/// GetStreamUri of the media service ver10.
pub const ACTION_GET_STREAM_URI: &str = "http://www.onvif.org/ver10/media/wsdl/GetStreamUri";

/// Escapes text for an XML element or attribute.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// A `urn:uuid:` message id from 16 random bytes (version 4 layout).
pub fn message_id(random: [u8; 16]) -> String {
    let mut b = random;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The WS-Discovery Probe for ONVIF video transmitters (cameras, encoders,
/// NVRs), sent to [`MULTICAST`].
pub fn probe_message(message_id: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<s:Envelope xmlns:s="{s}" xmlns:a="{a}" xmlns:d="{d}" xmlns:dn="{dn}">"#,
            r#"<s:Header><a:Action s:mustUnderstand="1">{d}/Probe</a:Action>"#,
            r#"<a:MessageID>{id}</a:MessageID>"#,
            r#"<a:ReplyTo><a:Address>{a}/role/anonymous</a:Address></a:ReplyTo>"#,
            r#"<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"#,
            r#"</s:Header><s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types>"#,
            r#"</d:Probe></s:Body></s:Envelope>"#
        ),
        s = NS_SOAP,
        a = NS_WSA,
        d = NS_WSD,
        dn = NS_DN,
        id = escape(message_id)
    )
}

/// One device's answer to the Probe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeMatch {
    /// The endpoint reference (`urn:uuid:...`): the device's stable id.
    pub endpoint: String,
    /// Service addresses of the device service (`http://ip/onvif/device_service`).
    pub xaddrs: Vec<String>,
    /// `onvif://www.onvif.org/name/...` scope, percent-decoded, if any.
    pub name: Option<String>,
    /// `onvif://www.onvif.org/hardware/...` scope, percent-decoded, if any.
    pub hardware: Option<String>,
    /// What `RelatesTo` names (our Probe's MessageID when the device
    /// follows WS-Addressing).
    pub relates_to: Option<String>,
}

/// Most ProbeMatch entries read from one datagram (one device sends one).
const MAX_MATCHES: usize = 16;
/// Most XAddrs kept per device.
const MAX_XADDRS: usize = 8;

fn scope(scopes: &str, prefix: &str) -> Option<String> {
    scopes.split_whitespace().find_map(|s| {
        let v = s.strip_prefix(prefix)?;
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
        let v = v.trim();
        (!v.is_empty()).then(|| v.chars().take(64).collect())
    })
}

/// Reads a ProbeMatches datagram. `Ok(vec![])` for a valid SOAP message
/// that is not a ProbeMatches (another client's Probe, a Hello).
pub fn parse_probe_matches(xml: &[u8]) -> Result<Vec<ProbeMatch>, XmlError> {
    let doc = Doc::parse(xml)?;
    let relates_to = doc.find("RelatesTo").map(|i| doc.text(i).to_owned());
    let Some(matches) = doc.find("ProbeMatches") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for m in doc
        .children(matches)
        .filter(|&m| doc.nodes[m].name == "ProbeMatch")
    {
        if out.len() >= MAX_MATCHES {
            break;
        }
        let text = |name: &str| doc.child(m, name).map_or("", |i| doc.text(i));
        let endpoint = doc
            .path(m, &["EndpointReference", "Address"])
            .map_or("", |i| doc.text(i));
        let xaddrs: Vec<String> = text("XAddrs")
            .split_whitespace()
            .filter(|x| x.starts_with("http://") || x.starts_with("https://"))
            .take(MAX_XADDRS)
            .map(str::to_owned)
            .collect();
        let scopes = text("Scopes");
        out.push(ProbeMatch {
            endpoint: endpoint.chars().take(128).collect(),
            xaddrs,
            name: scope(scopes, "onvif://www.onvif.org/name/"),
            hardware: scope(scopes, "onvif://www.onvif.org/hardware/"),
            relates_to: relates_to.clone(),
        });
    }
    Ok(out)
}

/// A WS-Security UsernameToken with a PasswordDigest.
#[derive(Clone, PartialEq, Eq)]
pub struct UsernameToken {
    /// The user name.
    pub username: String,
    /// Base64(SHA-1(nonce + created + password)).
    pub digest: String,
    /// Base64 of the nonce bytes.
    pub nonce: String,
    /// UTC time, `YYYY-MM-DDThh:mm:ssZ`.
    pub created: String,
}

impl std::fmt::Debug for UsernameToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digest is password-equivalent for replays within the
        // device's time window: never shown.
        write!(f, "UsernameToken({}, <digest>)", self.username)
    }
}

/// Builds the token: the digest is Base64(SHA-1(nonce ‖ created ‖
/// password)) over the raw nonce bytes (WS-Security UsernameToken Profile
/// 1.0 §3.1). Devices check `created` against their clock (ONVIF Core
/// §5.12.2.1), hence the auth failure advice about clocks.
pub fn username_token(
    username: &str,
    password: &str,
    nonce: &[u8],
    created: &str,
) -> UsernameToken {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(nonce);
    ctx.update(created.as_bytes());
    ctx.update(password.as_bytes());
    UsernameToken {
        username: username.to_owned(),
        digest: base64(ctx.finish().as_ref()),
        nonce: base64(nonce),
        created: created.to_owned(),
    }
}

/// Standard Base64 with padding (RFC 4648 §4). Hand-written: the
/// `base64` crate's encoder, generic over engines, cost 2.3 KB on aarch64
/// for two 20-byte inputs.
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                o.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// A SOAP 1.2 envelope around `body`, with the token in a
/// `wsse:Security` header when given.
pub fn envelope(token: Option<&UsernameToken>, body: &str) -> String {
    let mut s = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{NS_SOAP}"><s:Header>"#
    );
    if let Some(t) = token {
        let _ = write!(
            s,
            concat!(
                r#"<wsse:Security s:mustUnderstand="1" xmlns:wsse="{wsse}" xmlns:wsu="{wsu}">"#,
                r#"<wsse:UsernameToken><wsse:Username>{user}</wsse:Username>"#,
                r#"<wsse:Password Type="{pd}">{digest}</wsse:Password>"#,
                r#"<wsse:Nonce EncodingType="{b64}">{nonce}</wsse:Nonce>"#,
                r#"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"#
            ),
            wsse = NS_WSSE,
            wsu = NS_WSU,
            user = escape(&t.username),
            pd = PASSWORD_DIGEST,
            digest = t.digest,
            b64 = BASE64_BINARY,
            nonce = t.nonce,
            created = escape(&t.created),
        );
    }
    s.push_str("</s:Header><s:Body>");
    s.push_str(body);
    s.push_str("</s:Body></s:Envelope>");
    s
}

/// GetCapabilities(Media) of the device service.
pub fn get_capabilities_body() -> String {
    format!(
        r#"<tds:GetCapabilities xmlns:tds="{NS_TDS}"><tds:Category>Media</tds:Category></tds:GetCapabilities>"#
    )
}

/// GetProfiles of the media service.
pub fn get_profiles_body() -> String {
    format!(r#"<trt:GetProfiles xmlns:trt="{NS_TRT}"/>"#)
}

/// GetStreamUri(RTP-Unicast over RTSP) for one profile.
pub fn get_stream_uri_body(profile_token: &str) -> String {
    format!(
        concat!(
            r#"<trt:GetStreamUri xmlns:trt="{trt}" xmlns:tt="{tt}"><trt:StreamSetup>"#,
            r#"<tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol>"#,
            r#"</tt:Transport></trt:StreamSetup><trt:ProfileToken>{token}</trt:ProfileToken>"#,
            r#"</trt:GetStreamUri>"#
        ),
        trt = NS_TRT,
        tt = NS_TT,
        token = escape(profile_token)
    )
}

/// A SOAP fault, as devices send for errors (ONVIF Core §5.11.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `env:Sender` / `env:Receiver`, prefix dropped.
    pub code: String,
    /// The innermost subcode, prefix dropped (`NotAuthorized`, ...).
    pub subcode: Option<String>,
    /// The first reason text.
    pub reason: String,
}

impl Fault {
    /// Whether the device refused the credentials (`ter:NotAuthorized`,
    /// or the WS-Security faults some devices send instead).
    pub fn is_auth(&self) -> bool {
        let sub = self.subcode.as_deref().unwrap_or("");
        matches!(
            sub,
            "NotAuthorized" | "FailedAuthentication" | "InvalidSecurityToken" | "InvalidSecurity"
        ) || self.code == "FailedAuthentication"
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clip: String = self.reason.chars().take(160).collect();
        match &self.subcode {
            Some(s) => write!(f, "SOAP fault {}/{s}: {clip}", self.code),
            None => write!(f, "SOAP fault {}: {clip}", self.code),
        }
    }
}

fn value_local(doc: &Doc, i: usize) -> String {
    super::xml::local(doc.text(i)).chars().take(64).collect()
}

/// The fault in a SOAP answer, if it is one (SOAP 1.2; SOAP 1.1's
/// `faultcode`/`faultstring` too, which old firmware sends).
pub fn fault(doc: &Doc) -> Option<Fault> {
    let f = doc.find("Fault")?;
    if let Some(code) = doc.child(f, "Code") {
        let value = doc.child(code, "Value").map(|v| value_local(doc, v));
        let mut sub = None;
        let mut at = code;
        while let Some(s) = doc.child(at, "Subcode") {
            if let Some(v) = doc.child(s, "Value") {
                sub = Some(value_local(doc, v));
            }
            at = s;
        }
        let reason = doc
            .child(f, "Reason")
            .and_then(|r| doc.child(r, "Text"))
            .map_or("", |t| doc.text(t));
        return Some(Fault {
            code: value.unwrap_or_default(),
            subcode: sub,
            reason: reason.to_owned(),
        });
    }
    let code = doc.child(f, "faultcode").map(|c| value_local(doc, c));
    let reason = doc.child(f, "faultstring").map_or("", |t| doc.text(t));
    Some(Fault {
        code: code.clone().unwrap_or_default(),
        subcode: code,
        reason: reason.to_owned(),
    })
}

/// What went wrong with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// Not XML we can read.
    Xml(XmlError),
    /// A SOAP fault.
    Fault(Fault),
    /// Valid SOAP without the expected element.
    Missing(&'static str),
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::Xml(e) => write!(f, "unreadable answer: {e}"),
            AnswerError::Fault(x) => x.fmt(f),
            AnswerError::Missing(what) => write!(f, "the answer has no {what}"),
        }
    }
}

impl std::error::Error for AnswerError {}

fn answer(xml: &[u8]) -> Result<Doc, AnswerError> {
    let doc = Doc::parse(xml).map_err(AnswerError::Xml)?;
    match fault(&doc) {
        Some(f) => Err(AnswerError::Fault(f)),
        None => Ok(doc),
    }
}

/// The media service address from a GetCapabilities answer
/// (`Capabilities/Media/XAddr`); `Ok(None)` when the device has none.
pub fn parse_media_xaddr(xml: &[u8]) -> Result<Option<String>, AnswerError> {
    let doc = answer(xml)?;
    let caps = doc
        .find("Capabilities")
        .ok_or(AnswerError::Missing("Capabilities"))?;
    Ok(doc
        .path(caps, &["Media", "XAddr"])
        .map(|i| doc.text(i).to_owned())
        .filter(|x| x.starts_with("http://") || x.starts_with("https://")))
}

/// One media profile, with what the camera blocks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The profile token (for GetStreamUri).
    pub token: String,
    /// The profile's display name.
    pub name: String,
    /// Video encoding (`H264`, `H265`, `JPEG`), if configured.
    pub encoding: Option<String>,
    /// Pixel size, if configured.
    pub resolution: Option<(u32, u32)>,
}

/// Most profiles read (an NVR has a few per channel).
pub const MAX_PROFILES: usize = 64;

/// The profiles of a GetProfiles answer, in document order.
pub fn parse_profiles(xml: &[u8]) -> Result<Vec<Profile>, AnswerError> {
    let doc = answer(xml)?;
    let resp = doc
        .find("GetProfilesResponse")
        .ok_or(AnswerError::Missing("GetProfilesResponse"))?;
    let mut out = Vec::new();
    for p in doc
        .children(resp)
        .filter(|&p| doc.nodes[p].name == "Profiles")
    {
        let Some(token) = doc.attr(p, "token").filter(|t| !t.is_empty()) else {
            continue;
        };
        let name = doc.child(p, "Name").map_or("", |n| doc.text(n));
        let vec = doc.child(p, "VideoEncoderConfiguration");
        let encoding = vec
            .and_then(|v| doc.child(v, "Encoding"))
            .map(|e| doc.text(e).chars().take(16).collect());
        let resolution = vec.and_then(|v| doc.child(v, "Resolution")).and_then(|r| {
            let n = |k: &str| {
                doc.child(r, k)
                    .and_then(|i| doc.text(i).parse::<u32>().ok())
            };
            Some((n("Width")?, n("Height")?))
        });
        out.push(Profile {
            token: token.chars().take(64).collect(),
            name: name.chars().take(64).collect(),
            encoding,
            resolution,
        });
        if out.len() >= MAX_PROFILES {
            break;
        }
    }
    Ok(out)
}

/// The RTSP URI of a GetStreamUri answer (`MediaUri/Uri`).
pub fn parse_stream_uri(xml: &[u8]) -> Result<String, AnswerError> {
    let doc = answer(xml)?;
    let resp = doc
        .find("GetStreamUriResponse")
        .ok_or(AnswerError::Missing("GetStreamUriResponse"))?;
    doc.path(resp, &["MediaUri", "Uri"])
        .map(|i| doc.text(i).to_owned())
        .filter(|u| !u.is_empty())
        .ok_or(AnswerError::Missing("MediaUri/Uri"))
}

/// The two streams a block is printed for: the largest video profile
/// (main) and the next smaller one (sub). Profiles without a resolution
/// come last; ties keep the device's order.
pub fn main_and_sub(profiles: &[Profile]) -> Vec<&Profile> {
    // Two passes, not a sort: a sort instantiation is kilobytes.
    let area = |p: &Profile| p.resolution.map_or(0, |(w, h)| u64::from(w) * u64::from(h));
    let mut best: [Option<&Profile>; 2] = [None, None];
    for p in profiles {
        if best[0].is_none_or(|b| area(p) > area(b)) {
            best = [Some(p), best[0]];
        } else if best[1].is_none_or(|b| area(p) > area(b)) {
            best[1] = Some(p);
        }
    }
    best.into_iter().flatten().collect()
}

/// Lower-case `a-z 0-9 -` from `s` (other runs become one `-`), trimmed.
pub fn slug(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            o.push(c.to_ascii_lowercase());
        } else if !o.ends_with('-') && !o.is_empty() {
            o.push('-');
        }
    }
    o.trim_end_matches('-').to_owned()
}

/// A camera name valid under the wire rules (`a-z 0-9 - _ .`, at most
/// 63 bytes): `<device>-<host>-<main|sub>`, with the device name shortened
/// first when too long.
pub fn camera_name(device: Option<&str>, host: &str, role: &str) -> String {
    let host = slug(host);
    let tail = format!("-{host}-{role}");
    let room = sitewatch_wire::topic::MAX_NAME_LEN.saturating_sub(tail.len());
    let mut head = device
        .map(slug)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cam".into());
    head.truncate(room.max(1));
    let head = head.trim_end_matches('-');
    let mut name = format!("{head}{tail}");
    name.truncate(sitewatch_wire::topic::MAX_NAME_LEN);
    name
}

/// Quotes a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// One `[[rtsp.camera]]` block (the URL already without credentials).
pub fn camera_block(
    name: &str,
    url: &str,
    username: Option<&str>,
    password_file: Option<&str>,
) -> String {
    let mut s = format!(
        "[[rtsp.camera]]\nname = {}\nurl = {}\n",
        toml_str(name),
        toml_str(url)
    );
    if let Some(u) = username {
        let _ = writeln!(s, "username = {}", toml_str(u));
    }
    if let Some(f) = password_file {
        let _ = writeln!(s, "password_file = {}", toml_str(f));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONVIF Application Programmer's Guide §6.1.1.3: the UsernameToken
    /// example (user "user", password "userpassword").
    #[test]
    fn digest_matches_the_onvif_guide() {
        // LKqI6G/AikKCQrN0zqZFlg== decoded.
        let nonce = [
            44, 170, 136, 232, 111, 192, 138, 66, 130, 66, 179, 116, 206, 166, 69, 150,
        ];
        let t = username_token("user", "userpassword", &nonce, "2010-09-16T07:50:45Z");
        assert_eq!(t.digest, "tuOSpGlFlIXsozq4HFNeeGeFLEI=");
        assert_eq!(t.nonce, "LKqI6G/AikKCQrN0zqZFlg==");
        assert!(!format!("{t:?}").contains(&t.digest));
        let env = envelope(Some(&t), &get_profiles_body());
        let doc = Doc::parse(env.as_bytes()).expect("own envelope parses");
        assert_eq!(doc.text(doc.find("Password").expect("pw")), t.digest);
    }

    /// The ProbeMatches example of the ONVIF Application Programmer's
    /// Guide §5.1 (an Axis device), as devices send it.
    const GUIDE_PROBE_MATCHES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope"
 xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing"
 xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"
 xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<SOAP-ENV:Header>
<wsa:MessageID>uuid:84ede3de-e374-11df-b259-00408c1836b2</wsa:MessageID>
<wsa:RelatesTo>uuid:84ede3de-7dec-11d0-c360-F01234567890</wsa:RelatesTo>
<wsa:To SOAP-ENV:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>
<wsa:Action SOAP-ENV:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>
<d:AppSequence SOAP-ENV:mustUnderstand="true" MessageNumber="3" InstanceId="1287607812"></d:AppSequence>
</SOAP-ENV:Header>
<SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>
<wsa:EndpointReference><wsa:Address>urn:uuid:a1f48ac2-dc8b-11df-b255-00408c1836b2</wsa:Address></wsa:EndpointReference>
<d:Types>dn:NetworkVideoTransmitter</d:Types>
<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/type/audio_encoder
onvif://www.onvif.org/hardware/MODEL onvif://www.onvif.org/name/VENDOR%20MODEL
onvif://www.onvif.org/location/ANY</d:Scopes>
<d:XAddrs>http://169.254.76.145/onvif/services http://192.168.1.24/onvif/services</d:XAddrs>
<d:MetadataVersion>1</d:MetadataVersion>
</d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

    #[test]
    fn probe_matches_of_the_guide() {
        let m = parse_probe_matches(GUIDE_PROBE_MATCHES.as_bytes()).expect("parses");
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].endpoint,
            "urn:uuid:a1f48ac2-dc8b-11df-b255-00408c1836b2"
        );
        assert_eq!(
            m[0].xaddrs,
            [
                "http://169.254.76.145/onvif/services",
                "http://192.168.1.24/onvif/services"
            ]
        );
        assert_eq!(m[0].name.as_deref(), Some("VENDOR MODEL"));
        assert_eq!(m[0].hardware.as_deref(), Some("MODEL"));
        // Our own Probe is valid XML but no match.
        let id = message_id([7; 16]);
        assert!(id.starts_with("urn:uuid:07070707-0707-4707-8707-"));
        assert_eq!(
            parse_probe_matches(probe_message(&id).as_bytes()),
            Ok(vec![])
        );
    }

    #[test]
    fn faults_and_answers() {
        let not_auth = r#"<?xml version="1.0"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">Sender not Authorized</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#;
        match parse_profiles(not_auth.as_bytes()) {
            Err(AnswerError::Fault(f)) => {
                assert!(f.is_auth());
                assert_eq!(f.code, "Sender");
                assert_eq!(f.reason, "Sender not Authorized");
            }
            other => panic!("{other:?}"),
        }
        let profiles = r#"<s:Envelope xmlns:s="x"><s:Body><trt:GetProfilesResponse>
<trt:Profiles token="Profile_2" fixed="true"><tt:Name>sub</tt:Name><tt:VideoEncoderConfiguration token="v2"><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>640</tt:Width><tt:Height>360</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>
<trt:Profiles token="Profile_1"><tt:Name>main</tt:Name><tt:VideoEncoderConfiguration><tt:Encoding>H265</tt:Encoding><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>
<trt:Profiles token="Profile_3"><tt:Name>audio only</tt:Name></trt:Profiles>
<trt:Profiles><tt:Name>no token</tt:Name></trt:Profiles>
</trt:GetProfilesResponse></s:Body></s:Envelope>"#;
        let p = parse_profiles(profiles.as_bytes()).expect("profiles");
        assert_eq!(p.len(), 3);
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let ms = main_and_sub(&p);
        assert_eq!(ms[0].token, "Profile_1");
        assert_eq!(ms[0].resolution, Some((1920, 1080)));
        assert_eq!(ms[1].token, "Profile_2");
        assert_eq!(ms[1].encoding.as_deref(), Some("H264"));
        let uri = r#"<s:Envelope xmlns:s="x"><s:Body><trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://192.168.1.64:554/Streaming/Channels/101?transportmode=unicast&amp;profile=Profile_1</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect></trt:MediaUri></trt:GetStreamUriResponse></s:Body></s:Envelope>"#;
        assert_eq!(
            parse_stream_uri(uri.as_bytes()).as_deref(),
            Ok("rtsp://192.168.1.64:554/Streaming/Channels/101?transportmode=unicast&profile=Profile_1")
        );
        assert_eq!(
            parse_stream_uri(b"<a/>"),
            Err(AnswerError::Missing("GetStreamUriResponse"))
        );
        let caps = r#"<s:Envelope xmlns:s="x"><s:Body><tds:GetCapabilitiesResponse><tds:Capabilities><tt:Media><tt:XAddr>http://192.168.1.64/onvif/Media</tt:XAddr></tt:Media></tds:Capabilities></tds:GetCapabilitiesResponse></s:Body></s:Envelope>"#;
        assert_eq!(
            parse_media_xaddr(caps.as_bytes()),
            Ok(Some("http://192.168.1.64/onvif/Media".into()))
        );
        assert!(matches!(
            parse_media_xaddr(b"<a><b>"),
            Err(AnswerError::Xml(_))
        ));
    }

    #[test]
    fn names_and_blocks() {
        assert_eq!(
            camera_name(Some("HIKVISION DS-2CD2032-I"), "192.168.1.64", "main"),
            "hikvision-ds-2cd2032-i-192-168-1-64-main"
        );
        assert_eq!(camera_name(None, "10.0.0.5", "sub"), "cam-10-0-0-5-sub");
        assert_eq!(camera_name(Some("%%%"), "h", "sub"), "cam-h-sub");
        let long = camera_name(Some(&"x".repeat(200)), "192.168.100.200", "main");
        assert!(long.len() <= 63);
        for n in [&long, &camera_name(Some("Ünïcode cam"), "fe80::1", "sub")] {
            assert_eq!(sitewatch_wire::topic::validate_name(n), Ok(()), "{n}");
        }
        let b = camera_block(
            "a",
            "rtsp://h/x?a=1&b=\"2\"",
            Some("ad\\min"),
            Some("/etc/p"),
        );
        let v: toml::Table = toml::from_str(&b).expect("toml");
        let cam = &v["rtsp"]["camera"][0];
        assert_eq!(cam["url"].as_str(), Some("rtsp://h/x?a=1&b=\"2\""));
        assert_eq!(cam["username"].as_str(), Some("ad\\min"));
    }
}
