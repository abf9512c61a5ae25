//! The site's DDNS name against its uplink address: the agent sends the
//! address of its WAN interface in every heartbeat (`wan.addr`,
//! docs/wire.md), the bridge keeps the latest on `sites` (migration 15),
//! and each probe compares it with what the probed host name resolved
//! to. Pure: the store reads the row, [`compare`] says what it means.

use std::net::IpAddr;

/// The site's latest uplink address as the bridge stores it (`sites`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteWan {
    /// `wan_addr`: the IPv4 address of the site's uplink interface.
    pub addr: Option<String>,
    /// `wan_addr_class`: `public`, `cgnat`, `private`, ...
    pub class: Option<String>,
    /// `wan_addr6`: a global IPv6 address of it.
    pub addr6: Option<String>,
}

/// What the comparison found: `ddns` for the `ddns` column (`Some(true)`
/// the name resolves to the site's address, `Some(false)` it does not,
/// `None` not compared) and a sentence for the detail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The `ddns` column.
    pub ddns: Option<bool>,
    /// Plain words for the detail (none when there is nothing to say).
    pub note: Option<String>,
}

/// Compares `resolved` (what `host` resolved to; the address itself when
/// `host` is one) with the site's uplink address. Compared only when
/// that address is known and public; a site behind carrier-grade NAT or
/// another NAT is named as such, since no DDNS name can help there.
pub fn compare(host: &str, resolved: &[IpAddr], wan: &SiteWan) -> Verdict {
    let parse = |a: &Option<String>| a.as_deref().and_then(|a| a.parse::<IpAddr>().ok());
    let (Some(addr), Some(class)) = (parse(&wan.addr), wan.class.as_deref()) else {
        return Verdict::default();
    };
    match class {
        "cgnat" => {
            return Verdict {
                ddns: None,
                note: Some(format!(
                    "the site is behind the ISP's carrier-grade NAT (its WAN address {addr} is \
                     in 100.64.0.0/10): port forwarding cannot work; ask the ISP for a public \
                     IP, or use a VPN or relay the site dials out to"
                )),
            }
        }
        "private" => {
            return Verdict {
                ddns: None,
                note: Some(format!(
                    "the site's router is behind another NAT (its WAN address {addr} is \
                     private): the port forward also needs a forward on the modem or ISP box \
                     upstream"
                )),
            }
        }
        "public" => {}
        _ => return Verdict::default(),
    }
    if resolved.is_empty() {
        return Verdict::default();
    }
    let addr6 = parse(&wan.addr6);
    if resolved.iter().any(|r| *r == addr || Some(*r) == addr6) {
        return Verdict {
            ddns: Some(true),
            note: None,
        };
    }
    let got: Vec<String> = resolved.iter().map(IpAddr::to_string).collect();
    let note = if host.parse::<IpAddr>().is_ok() {
        format!(
            "the configured address {host} is not the site's WAN address {addr}: use the \
             site's DDNS name or its current address in the live config"
        )
    } else {
        format!(
            "the DDNS name {host} resolves to {} but the site's WAN address is {addr}: the \
             DDNS client on the router is not updating",
            got.join(", ")
        )
    };
    Verdict {
        ddns: Some(false),
        note: Some(note),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wan(addr: &str, class: &str) -> SiteWan {
        SiteWan {
            addr: Some(addr.into()),
            class: Some(class.into()),
            addr6: None,
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().expect("ip")).collect()
    }

    #[test]
    fn a_public_address_is_compared() {
        let w = wan("81.2.69.142", "public");
        let same = compare("shop.example", &ips(&["81.2.69.142"]), &w);
        assert_eq!(same.ddns, Some(true));
        assert_eq!(same.note, None);
        // One of several records is enough.
        let v = compare("shop.example", &ips(&["2001:db8::1", "81.2.69.142"]), &w);
        assert_eq!(v.ddns, Some(true));
        let stale = compare("shop.example", &ips(&["81.2.69.7", "81.2.69.8"]), &w);
        assert_eq!(stale.ddns, Some(false));
        assert_eq!(
            stale.note.as_deref(),
            Some(
                "the DDNS name shop.example resolves to 81.2.69.7, 81.2.69.8 but the site's \
                 WAN address is 81.2.69.142: the DDNS client on the router is not updating"
            )
        );
        let literal = compare("81.2.69.7", &ips(&["81.2.69.7"]), &w);
        assert_eq!(literal.ddns, Some(false));
        assert!(literal
            .note
            .expect("note")
            .contains("configured address 81.2.69.7"));
        // The site's IPv6 address counts too.
        let w6 = SiteWan {
            addr6: Some("2001:db8::7".into()),
            ..w
        };
        assert_eq!(
            compare("shop.example", &ips(&["2001:db8::7"]), &w6).ddns,
            Some(true)
        );
    }

    #[test]
    fn cgnat_and_double_nat_are_named_not_compared() {
        let v = compare(
            "shop.example",
            &ips(&["81.2.69.7"]),
            &wan("100.72.18.9", "cgnat"),
        );
        assert_eq!(v.ddns, None);
        assert!(v
            .note
            .expect("note")
            .contains("port forwarding cannot work"));
        let v = compare(
            "shop.example",
            &ips(&["81.2.69.7"]),
            &wan("192.168.8.100", "private"),
        );
        assert_eq!(v.ddns, None);
        assert!(v.note.expect("note").contains("behind another NAT"));
    }

    #[test]
    fn nothing_known_nothing_said() {
        let r = ips(&["81.2.69.7"]);
        assert_eq!(compare("x", &r, &SiteWan::default()), Verdict::default());
        assert_eq!(
            compare("x", &r, &wan("garbage", "public")),
            Verdict::default()
        );
        assert_eq!(
            compare("x", &r, &wan("169.254.1.1", "link_local")),
            Verdict::default()
        );
        // The name did not resolve: the class `dns` says it already.
        assert_eq!(
            compare("x", &[], &wan("81.2.69.142", "public")),
            Verdict::default()
        );
    }
}
