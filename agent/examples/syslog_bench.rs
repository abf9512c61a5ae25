//! Helper for `scripts/bench/syslog.sh` (not shipped): a paced UDP syslog
//! sender and a TCP line-counting sink. Loopback only by intent.
//!
//! ```text
//! syslog_bench send --port P --rate R --seconds S [--start N]
//!     sends R*S RFC 3164 lines (~130 bytes, numbered from N) to
//!     127.0.0.1:P at R lines/s in 1 ms slices; prints "sent COUNT SECS".
//! syslog_bench sink --port P --out FILE
//!     accepts TCP connections on 127.0.0.1:P and counts LF-terminated
//!     lines; every 100 ms writes the running total to FILE.
//! ```

use std::io::Read as _;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name)
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn send(args: &[String]) {
    let port = num(args, "--port", 0) as u16;
    let rate = num(args, "--rate", 1000).max(1);
    let secs = num(args, "--seconds", 5).max(1);
    let start = num(args, "--start", 0);
    let total = rate * secs;
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(("127.0.0.1", port)).expect("connect");
    let t0 = Instant::now();
    let mut buf = Vec::with_capacity(256);
    let mut sent = 0u64;
    let mut failed = 0u64;
    while sent < total {
        // Lines due by now at `rate` per second.
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            buf.clear();
            use std::io::Write as _;
            let _ = write!(
                buf,
                "<134>Nov 27 23:00:00 nvr-bench recorder[1042]: channel 3 motion event seq={} \
                 disk=/srv/recordings/ch03 status=ok",
                start + sent
            );
            if sock.send(&buf).is_err() {
                failed += 1;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    println!(
        "sent {} {:.3} failed {failed}",
        sent,
        t0.elapsed().as_secs_f64()
    );
}

fn sink(args: &[String]) {
    let port = num(args, "--port", 0) as u16;
    let out = arg(args, "--out").expect("--out FILE");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind sink");
    let count = Arc::new(AtomicU64::new(0));
    let writer = Arc::clone(&count);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::write(&out, format!("{}\n", writer.load(Ordering::Relaxed)));
    });
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let count = Arc::clone(&count);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                count.fetch_add(lines as u64, Ordering::Relaxed);
            }
        });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("send") => send(&args),
        Some("sink") => sink(&args),
        _ => {
            eprintln!(
                "usage: syslog_bench send --port P --rate R --seconds S | sink --port P --out FILE"
            );
            std::process::exit(2);
        }
    }
}
