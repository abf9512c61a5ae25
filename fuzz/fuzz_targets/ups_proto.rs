//! Any bytes as upsd's reply to `LIST VAR <ups>` and `LIST UPS`: the
//! agent's NUT protocol reader returns items or an error, never panics,
//! stays within its bounds, and a reading from any items is well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitewatch_agent::sources::ups::proto::{self, Reading, MAX_FLAGS, MAX_FLAG_LEN, MAX_ITEMS};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Ok(w) = proto::words(line) {
            assert!(w.len() <= proto::MAX_WORDS);
            // What the client sends round-trips through the reader.
            if let Some(first) = w.first().filter(|f| f.len() < 1024) {
                let q = proto::words(&format!("PASSWORD {}", proto::quote(first)));
                assert_eq!(q.ok().and_then(|q| q.get(1).cloned()).as_ref(), Some(first));
            }
        }
    }
    if let Ok(items) = proto::parse_list(&text, &["VAR", "su700"]) {
        assert!(items.len() <= MAX_ITEMS);
        let r = Reading::from_vars("su700", &items);
        assert!(r.flags.len() <= MAX_FLAGS && r.flags.iter().all(|f| f.len() <= MAX_FLAG_LEN));
        for v in [r.charge_pct, r.runtime_secs, r.load_pct, r.input_voltage]
            .into_iter()
            .flatten()
        {
            assert!(v.is_finite() && v >= 0.0);
        }
        let _ = r.describe();
        let _ = r.power();
    }
    if let Ok(items) = proto::parse_list(&text, &["UPS"]) {
        assert!(proto::ups_names(&items).len() <= MAX_ITEMS);
    }
});
