//! The agent encodes without touching the heap: a counting global allocator
//! must see zero allocations while every payload kind is encoded.

use sitewatch_wire::payload::*;
use sitewatch_wire::topic::{Kind, Topic};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn encoding_does_not_allocate() {
    let h = Header {
        site: "lokasi1",
        boot: "0123456789abcdef",
        seq: 7,
        ts: 1_764_284_400_000,
    };
    let mounts = [MountOut {
        path: "/srv/rec",
        fs_type: "ext4",
        total_bytes: 1,
        used_bytes: 1,
        avail_bytes: 0,
        used_pct: 100.0,
        inodes_total: 1,
        inodes_free: 0,
        read_only: false,
        error: None,
    }];
    let ups = [UpsEntryOut {
        name: "myups",
        power: "on_battery",
        on_line: false,
        on_battery: true,
        low_battery: false,
        status: "OB DISCHRG",
        charge_pct: Some(80.0),
        runtime_secs: Some(1200),
        load_pct: Some(23.0),
        input_voltage_v: None,
        error: None,
    }];
    let reach = [ReachTargetOut {
        name: "NVR",
        address: "192.168.1.10",
        kind: "icmp",
        port: None,
        state: "up",
        sent: 3,
        received: 3,
        refused: 0,
        rtt_min_ms: Some(0.4),
        rtt_avg_ms: Some(0.5),
        rtt_max_ms: Some(0.6),
        error: None,
    }];
    let mut buf = [0u8; DISK_BUF_LEN];
    let before = ALLOCS.load(Ordering::SeqCst);
    let topic = Topic::new("lokasi1", Kind::Disk, None).map(|t| t.to_heapless());
    let a = sitewatch_wire::encode(
        &StatusOut::new(h, State::Online, None, 1, "0.1.0", 30),
        &mut buf,
    );
    let b = sitewatch_wire::encode(&HeartbeatOut::new(h, "0.1.0", 30), &mut buf);
    let c = sitewatch_wire::encode(&DiskOut::new(h, &mounts), &mut buf);
    let d = sitewatch_wire::encode(&UpsOut::new(h, 15, None, &ups), &mut buf);
    let e = sitewatch_wire::encode(&ReachOut::new(h, 30, &reach), &mut buf);
    let after = ALLOCS.load(Ordering::SeqCst);
    assert!(topic.is_ok() && a.is_ok() && b.is_ok() && c.is_ok() && d.is_ok() && e.is_ok());
    assert_eq!(after - before, 0, "encoding allocated");
}
