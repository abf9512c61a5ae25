//! Any bytes as what an ONVIF device (or anything on the LAN) sends
//! `discover`: a WS-Discovery datagram, an HTTP response, or the SOAP body
//! of GetCapabilities, GetProfiles or GetStreamUri. Nothing panics, every
//! limit holds, and the camera names made from what is read are valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::discover::{http, proto, xml};

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = xml::Doc::parse(data) {
        assert!(data.len() <= xml::MAX_INPUT);
        assert!(!doc.nodes.is_empty() && doc.nodes.len() <= xml::MAX_NODES);
        for (i, n) in doc.nodes.iter().enumerate() {
            assert!(n.parent.is_none_or(|p| p < i));
            assert!(n.attrs.len() <= xml::MAX_ATTRS);
        }
        let _ = proto::fault(&doc);
    }
    if let Ok(matches) = proto::parse_probe_matches(data) {
        for m in matches {
            let name = proto::camera_name(m.name.as_deref(), &m.endpoint, "main");
            assert_eq!(
                sitewatch_wire::topic::validate_name(&name),
                Ok(()),
                "{name}"
            );
        }
    }
    if let Ok(profiles) = proto::parse_profiles(data) {
        assert!(profiles.len() <= proto::MAX_PROFILES);
        let picked = proto::main_and_sub(&profiles);
        assert!(picked.len() <= 2);
        for p in picked {
            let name = proto::camera_name(Some(&p.name), &p.token, "sub");
            assert_eq!(
                sitewatch_wire::topic::validate_name(&name),
                Ok(()),
                "{name}"
            );
        }
    }
    if let Ok(uri) = proto::parse_stream_uri(data) {
        // The block quotes it as TOML; it must read back the same.
        let block = proto::camera_block("c", &uri, Some(&uri), None);
        let t: toml::Table = toml::from_str(&block).expect("our block is TOML");
        assert_eq!(t["rtsp"]["camera"][0]["url"].as_str(), Some(uri.as_str()));
    }
    let _ = proto::parse_media_xaddr(data);
    for closed in [false, true] {
        if let Ok(r) = http::parse(data, closed) {
            assert!(r.body.len() <= http::MAX_BODY);
            assert!((100..1000).contains(&r.status));
        }
    }
});
