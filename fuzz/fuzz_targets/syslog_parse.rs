//! Any bytes as a received syslog line: `parse` never panics, keeps its
//! output within the input and the wire limits, and the record goes through
//! batching, the heap-free encoder and the bridge's decoder intact, with
//! the batch's computed encoded size equal to what the encoder wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::syslog::batch::{Input, Pending};
use sitewatch_agent::syslog::parse::{parse, ParseCtx};
use sitewatch_wire::payload::{Header, LogOut, LOG_BUF_LEN};
use sitewatch_wire::Message;

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, line)) = data.split_first() else {
        return;
    };
    // Receive times around New Year 2026 and zones from -12h to +14h.
    let ctx = ParseCtx {
        rx_ms: 1_767_225_600_000 + u64::from(sel) * 3_600_000,
        tz_offset_secs: (i32::from(sel % 27) - 12) * 3600,
    };
    let r = parse(line, &ctx);
    assert!(r.facility <= 23 && r.severity <= 7);
    for f in [r.host, r.app, r.msg]
        .into_iter()
        .chain(r.procid)
        .chain(r.msgid)
        .chain(r.sd)
    {
        assert!(within(line, f), "output must be a slice of the input");
    }
    for f in [r.host, r.app].into_iter().chain(r.procid).chain(r.msgid) {
        assert!(f.len() <= 255);
    }

    let mut pending = Pending::new(1 << 20, "lokasi1", "0123456789abcdef");
    let now = tokio::time::Instant::now();
    pending.add(
        &Input {
            ts: r.ts,
            rx: ctx.rx_ms,
            ip: "192.168.1.64",
            host: if r.host.is_empty() {
                b"192.168.1.64"
            } else {
                r.host
            },
            app: r.app,
            procid: r.procid,
            msgid: r.msgid,
            facility: r.facility,
            severity: r.severity,
            format: r.format,
            msg: r.msg,
            sd: r.sd,
            truncated: false,
        },
        now,
    );
    pending.close_if(now, std::time::Duration::ZERO, true);
    let batch = pending.front().expect("one batch");
    let records = batch.records();
    let header = Header {
        site: "lokasi1",
        boot: "0123456789abcdef",
        seq: 1,
        ts: 1,
    };
    let mut buf = vec![0u8; LOG_BUF_LEN];
    let n = sitewatch_wire::encode(&LogOut::new(header, &records), &mut buf).expect("encodes");
    let json = &buf[..n];
    let start = json
        .windows(11)
        .position(|w| w == b"\"records\":[")
        .expect("records")
        + 11;
    assert_eq!(
        batch.encoded_len(),
        n - start - 2,
        "computed size must match"
    );
    match sitewatch_wire::decode("sitewatch/v1/lokasi1/log", json) {
        Ok(Message::Log(l)) => {
            assert_eq!(l.records.len(), 1);
            assert_eq!(l.records[0].msg, records[0].msg);
            assert_eq!(l.records[0].app, records[0].app);
            assert_eq!(l.records[0].sd.as_deref(), records[0].sd);
        }
        other => panic!("the bridge must accept it: {other:?}"),
    }
});
