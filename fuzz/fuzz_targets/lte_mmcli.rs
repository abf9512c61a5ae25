//! Any bytes as ModemManager's `mmcli -K` output: the agent's reader
//! returns pairs or an error, never panics, keeps its bounds, and a
//! reading from any pairs classifies, describes and numbers itself within
//! range (the wire's event numbers are non-negative by construction).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::sources::lte::mmcli::{self, MAX_VALUE_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(pairs) = mmcli::parse_keyvalue(data) else {
        return;
    };
    assert!(!pairs.is_empty() && data.len() <= mmcli::MAX_OUTPUT_BYTES);
    let s = mmcli::signal(&pairs);
    for v in [s.rsrp_dbm, s.rsrq_db, s.snr_db, s.rssi_dbm]
        .into_iter()
        .flatten()
    {
        assert!(v.is_finite() && (-160.0..=50.0).contains(&v));
    }
    if let Ok(m) = mmcli::modem(&pairs) {
        for t in [&m.tech, &m.operator, &m.registration, &m.failed_reason]
            .into_iter()
            .flatten()
        {
            assert!(t.len() <= MAX_VALUE_LEN);
        }
        assert!(m.state.len() <= MAX_VALUE_LEN && m.quality_pct.is_none_or(|q| q <= 100));
        let _ = mmcli::classify(&m, &s);
        let words = mmcli::describe(&m, &s);
        assert!(words.len() < 1024);
        for (_, n) in mmcli::numbers(&m, &s) {
            assert!(n <= 160);
        }
    }
});
