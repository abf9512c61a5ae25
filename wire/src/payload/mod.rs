//! Payload types for each defined kind.
//!
//! Every payload is one flat JSON object that starts with the same header
//! fields (see [`Header`]): `v`, `site`, `boot`, `seq`, `ts`.
//!
//! Two families of types describe the same JSON:
//! - `*Out` types borrow everything and serialize without allocating; the
//!   agent encodes them into fixed buffers.
//! - owned types (feature `decode`) are what the bridge gets from
//!   [`crate::decode()`].
//!
//! The golden vectors keep the two families in step.

use serde::{Deserialize, Serialize};

mod health;
pub use health::*;
mod reach;
pub use reach::*;
mod ups;
pub use ups::*;

/// Longest boot id, in bytes.
pub const MAX_BOOT_LEN: usize = 32;

/// Most mount points one `disk` message may carry.
pub const MAX_MOUNTS: usize = 16;

/// Longest mount path accepted in a `disk` message, in bytes.
pub const MAX_PATH_LEN: usize = 255;

/// Buffer size that always fits an encoded [`StatusOut`].
pub const STATUS_BUF_LEN: usize = 512;
/// Buffer size that always fits an encoded [`HeartbeatOut`] (every number
/// at its largest: 1134 bytes with the syslog counters).
pub const HEARTBEAT_BUF_LEN: usize = 3072;
/// Buffer size that always fits an encoded [`DiskOut`] with [`MAX_MOUNTS`]
/// entries whose strings respect their bounds (paths escaped at worst).
pub const DISK_BUF_LEN: usize = 16 * 1024;

/// Checks a boot id: 1 to 32 bytes of `[0-9a-z]`. The agent makes 16
/// lowercase hex digits from the OS random source at start.
pub fn validate_boot(boot: &str) -> bool {
    !boot.is_empty()
        && boot.len() <= MAX_BOOT_LEN
        && boot
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// Header fields present in every payload. Borrowed, so it is `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Site id; must equal the topic's site.
    pub site: &'a str,
    /// Boot id: new each time the agent process starts.
    pub boot: &'a str,
    /// Sequence number within the boot: 1 for the first message the agent
    /// publishes, +1 for each further message of any kind. 0 is reserved for
    /// the Last Will, which the broker publishes on the agent's behalf.
    pub seq: u64,
    /// Agent wall clock when the message was made, Unix milliseconds.
    pub ts: u64,
}

/// Site state carried on the retained `status` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Birth: the agent is connected.
    Online,
    /// Death: see [`OfflineReason`].
    Offline,
}

/// Why a site went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OfflineReason {
    /// The agent stopped on purpose (SIGTERM/SIGINT) and said so.
    Shutdown,
    /// The broker published the agent's Last Will: the connection was lost.
    Lost,
}

/// `status` payload (retained). Birth when `state` is online, death otherwise.
///
/// `session` counts MQTT connections within a boot (1 for the first). Birth
/// and the matching Last Will carry the same `session`, so a reader can tell
/// a late death of an earlier connection from the death of the current one
/// (Sparkplug's bdSeq idea).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StatusOut<'a> {
    /// Schema version, [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// See [`Header::site`].
    pub site: &'a str,
    /// See [`Header::boot`].
    pub boot: &'a str,
    /// See [`Header::seq`].
    pub seq: u64,
    /// See [`Header::ts`].
    pub ts: u64,
    /// Online or offline.
    pub state: State,
    /// Present only when offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<OfflineReason>,
    /// MQTT connection counter within the boot, from 1.
    pub session: u32,
    /// Agent version (`CARGO_PKG_VERSION`).
    pub agent_version: &'a str,
    /// Heartbeat period, so readers know when a site has gone quiet.
    pub heartbeat_secs: u32,
}

impl<'a> StatusOut<'a> {
    /// Builds a status payload from a header.
    pub fn new(
        h: Header<'a>,
        state: State,
        reason: Option<OfflineReason>,
        session: u32,
        agent_version: &'a str,
        heartbeat_secs: u32,
    ) -> Self {
        StatusOut {
            v: crate::SCHEMA_VERSION,
            site: h.site,
            boot: h.boot,
            seq: h.seq,
            ts: h.ts,
            state,
            reason,
            session,
            agent_version,
            heartbeat_secs,
        }
    }
}

/// The agent's own counters, reported in every heartbeat. Monotonic within a
/// boot. Decoders keep unknown counters, so adding one is compatible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct AgentCounters {
    /// Messages handed to the MQTT client.
    pub published: u64,
    /// Messages the broker acknowledged (QoS 1 PUBACK).
    pub acked: u64,
    /// Successful MQTT connections after the first.
    pub reconnects: u64,
    /// MQTT connection attempts that failed.
    pub connect_errors: u64,
    /// Messages dropped because the publish queue was full.
    pub dropped: u64,
    /// Disk samples that failed (unmounted path, statvfs error).
    pub disk_errors: u64,
    /// Syslog lines (UDP datagrams, TCP frames) received from allowed
    /// senders, before rate limiting.
    pub syslog_received: u64,
    /// Syslog lines parsed as RFC 5424.
    pub syslog_rfc5424: u64,
    /// Syslog lines parsed as RFC 3164 (BSD syslog).
    pub syslog_rfc3164: u64,
    /// Syslog lines understood by a vendor rule (MikroTik, UniFi...).
    pub syslog_vendor: u64,
    /// Syslog lines with a PRI but no timestamp.
    pub syslog_no_timestamp: u64,
    /// Syslog lines nothing recognised, relayed whole.
    pub syslog_raw: u64,
    /// Syslog lines cut at the receiver's line limit (still relayed).
    pub syslog_truncated: u64,
    /// Syslog lines dropped by a per-sender rate limit.
    pub syslog_rate_limited: u64,
    /// Syslog datagrams and TCP connections refused because the sender is
    /// not in the allow list.
    pub syslog_denied: u64,
    /// Syslog records received but never published: pending memory full
    /// (oldest dropped first), or still pending when the agent stopped.
    pub syslog_dropped: u64,
    /// Syslog TCP connections refused because the connection limit was
    /// reached.
    pub syslog_tcp_refused: u64,
    /// Outbox: records waiting (queued, in flight or on disk), all classes.
    pub outbox_depth: u64,
    /// Outbox: size of those records in bytes.
    pub outbox_bytes: u64,
    /// Outbox: records sent and not yet acknowledged.
    pub outbox_in_flight: u64,
    /// Outbox: `log` batches dropped because the outbox was full.
    pub outbox_dropped_log: u64,
    /// Outbox: time series (`heartbeat`, `disk`, `ups`, `reach`) dropped
    /// because the outbox was full.
    pub outbox_dropped_series: u64,
    /// Outbox: retained state (`status`, `stream`, `smart`) dropped
    /// because the outbox was full.
    pub outbox_dropped_state: u64,
    /// Outbox: events dropped because the outbox was full.
    pub outbox_dropped_event: u64,
    /// Outbox: undelivered state records replaced by a newer one for the
    /// same topic (their seq is a gap, like a drop).
    pub outbox_replaced: u64,
    /// Outbox: records put back after a lost connection (sent again).
    pub outbox_requeued: u64,
    /// Outbox: records found on disk at start (from earlier boots).
    pub outbox_replayed: u64,
    /// Outbox: damaged or torn regions skipped in its segment files.
    pub outbox_corrupt: u64,
    /// Outbox: fsync/fdatasync calls made.
    pub outbox_fsyncs: u64,
    /// Outbox: disk writes, reads, flushes or deletions that failed.
    pub outbox_disk_errors: u64,
    /// Wall-clock jumps of more than a minute against the monotonic clock.
    pub clock_jumps: u64,
    /// RTSP probes run.
    pub rtsp_probes: u64,
    /// SMART readings taken (native or smartctl).
    pub smart_reads: u64,
    /// SMART readings that failed.
    pub smart_errors: u64,
    /// Files deleted by retention cleanup.
    pub cleanup_deleted: u64,
    /// Cleanup errors (permission, vanished file...).
    pub cleanup_errors: u64,
}

/// `heartbeat` payload: liveness plus host and agent self-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeartbeatOut<'a> {
    /// Schema version.
    pub v: u32,
    /// See [`Header::site`].
    pub site: &'a str,
    /// See [`Header::boot`].
    pub boot: &'a str,
    /// See [`Header::seq`].
    pub seq: u64,
    /// See [`Header::ts`].
    pub ts: u64,
    /// Agent version.
    pub agent_version: &'a str,
    /// Heartbeat period in seconds.
    pub interval_secs: u32,
    /// Host uptime in seconds.
    pub uptime_secs: u64,
    /// Agent process uptime in seconds.
    pub agent_uptime_secs: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f32; 3],
    /// Total memory in bytes.
    pub mem_total_bytes: u64,
    /// Memory available to new processes in bytes (`MemAvailable`).
    pub mem_available_bytes: u64,
    /// Agent resident set size in bytes.
    pub agent_rss_bytes: u64,
    /// Whether the agent trusts its wall clock: `ok`, `before_build` (the
    /// clock reads earlier than the agent's build: no RTC and no NTP sync
    /// yet) or `jumped` (wall time moved more than a minute against the
    /// monotonic clock since the last heartbeat, e.g. NTP's first sync).
    pub clock: &'a str,
    /// Agent counters.
    pub counters: AgentCounters,
    /// The uplink interface's counters; absent when the agent reads none
    /// (`[heartbeat] wan_interface = "off"`, or no default route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wan: Option<WanOut<'a>>,
}

/// Longest network interface name (Linux `IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The counters of the site's uplink (WAN) interface, as the kernel keeps
/// them (`/sys/class/net/IF/statistics`): monotonic until the interface
/// is re-created or the gateway reboots, so the centre computes rates
/// from consecutive heartbeats and treats a decrease as a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WanOut<'a> {
    /// Interface name (at most [`MAX_IFNAME_LEN`] bytes).
    #[serde(rename = "if")]
    pub iface: &'a str,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive errors (CRC, frame, FIFO...).
    pub rx_errors: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Received packets dropped (no buffer, unknown protocol...).
    pub rx_dropped: u64,
    /// Packets to send dropped.
    pub tx_dropped: u64,
    /// The interface's primary IPv4 address, dotted quad (at most
    /// [`MAX_ADDR4_LEN`] bytes); absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<&'a str>,
    /// What `addr` is ([`wan_addr_class`]): `public`, `cgnat`, `private`,
    /// ...; present with `addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr_class: Option<&'a str>,
    /// A global IPv6 address of the interface (at most [`MAX_ADDR6_LEN`]
    /// bytes); absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr6: Option<&'a str>,
}

/// Longest `wan.addr`: a dotted quad.
pub const MAX_ADDR4_LEN: usize = 15;
/// Longest `wan.addr6`: eight groups of four hex digits and seven colons.
pub const MAX_ADDR6_LEN: usize = 39;

/// What an uplink's IPv4 address says about the site's reachability from
/// outside (`wan.addr_class`):
///
/// - `cgnat`: 100.64.0.0/10 (RFC 6598), the ISP's carrier-grade NAT: no
///   port forward on the site's router can work, so live view through
///   the DDNS name fails.
/// - `private`: RFC 1918 (10/8, 172.16/12, 192.168/16): the router sits
///   behind another NAT (an LTE modem, the ISP's box); a port forward
///   needs a second forward on the device upstream.
/// - `link_local`: 169.254/16, no DHCP answer.
/// - `loopback`: 127/8 (a wrong `wan_interface`).
/// - `reserved`: not routed on the Internet (0/8, 192.0.0/24,
///   documentation and benchmarking ranges, multicast, 240/4, broadcast).
/// - `public`: anything else.
pub fn wan_addr_class(a: core::net::Ipv4Addr) -> &'static str {
    let [o0, o1, o2, _] = a.octets();
    if o0 == 100 && (o1 & 0xc0) == 64 {
        "cgnat"
    } else if a.is_private() {
        "private"
    } else if a.is_link_local() {
        "link_local"
    } else if a.is_loopback() {
        "loopback"
    } else if o0 == 0
        || (o0, o1, o2) == (192, 0, 0)
        || (o0, o1, o2) == (192, 0, 2)
        || (o0, o1, o2) == (198, 51, 100)
        || (o0, o1, o2) == (203, 0, 113)
        || (o0 == 198 && (o1 & 0xfe) == 18)
        || o0 >= 224
    {
        "reserved"
    } else {
        "public"
    }
}

impl<'a> HeartbeatOut<'a> {
    /// Builds a heartbeat with the header filled in and the schema version set.
    #[allow(clippy::too_many_arguments)]
    pub fn new(h: Header<'a>, agent_version: &'a str, interval_secs: u32) -> Self {
        HeartbeatOut {
            v: crate::SCHEMA_VERSION,
            site: h.site,
            boot: h.boot,
            seq: h.seq,
            ts: h.ts,
            agent_version,
            interval_secs,
            uptime_secs: 0,
            agent_uptime_secs: 0,
            load: [0.0; 3],
            mem_total_bytes: 0,
            mem_available_bytes: 0,
            agent_rss_bytes: 0,
            clock: "ok",
            counters: AgentCounters::default(),
            wan: None,
        }
    }
}

/// One mount point in a `disk` message.
///
/// When the sample failed, `error` says why in a stable snake_case code and
/// the numbers are zero. A recording path that is not a mount point (USB disk
/// fell off, NFS not mounted) is reported as `not_mounted`: writing
/// recordings onto the root filesystem instead is a classic site failure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MountOut<'a> {
    /// Configured mount path.
    pub path: &'a str,
    /// Filesystem type from the mount table (`ext4`, `nfs`, `cifs`, `tmpfs`...).
    pub fs_type: &'a str,
    /// Total size in bytes.
    pub total_bytes: u64,
    /// Used bytes (total minus free, including root-reserved blocks).
    pub used_bytes: u64,
    /// Bytes available to unprivileged users.
    pub avail_bytes: u64,
    /// `used / (used + avail) * 100`, as `df` computes it.
    pub used_pct: f32,
    /// Total inodes (0 when the filesystem does not report them).
    pub inodes_total: u64,
    /// Free inodes.
    pub inodes_free: u64,
    /// Mounted read-only (often a failing disk remounted by the kernel).
    pub read_only: bool,
    /// Why the sample failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// `disk` payload: usage of every configured mount point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DiskOut<'a> {
    /// Schema version.
    pub v: u32,
    /// See [`Header::site`].
    pub site: &'a str,
    /// See [`Header::boot`].
    pub boot: &'a str,
    /// See [`Header::seq`].
    pub seq: u64,
    /// See [`Header::ts`].
    pub ts: u64,
    /// At most [`MAX_MOUNTS`] entries.
    pub mounts: &'a [MountOut<'a>],
}

impl<'a> DiskOut<'a> {
    /// Builds a disk payload.
    pub fn new(h: Header<'a>, mounts: &'a [MountOut<'a>]) -> Self {
        DiskOut {
            v: crate::SCHEMA_VERSION,
            site: h.site,
            boot: h.boot,
            seq: h.seq,
            ts: h.ts,
            mounts,
        }
    }
}

/// Buffer size that always fits an encoded [`LogOut`]: the agent closes a
/// batch before its encoded size passes [`LOG_BATCH_MAX_BYTES`], and one
/// record is at most [`LOG_RECORD_MAX_BYTES`] encoded.
pub const LOG_BUF_LEN: usize = LOG_BATCH_MAX_BYTES + LOG_RECORD_MAX_BYTES + 512;

/// Target size of one `log` batch, in encoded bytes.
pub const LOG_BATCH_MAX_BYTES: usize = 64 * 1024;

/// Most records in one `log` batch.
pub const MAX_LOG_RECORDS: usize = 1024;

/// Longest `msg` text of one record, in bytes, after truncation. The
/// receiver's default line limit is 8 KiB; this bound leaves room for a
/// larger configured limit while keeping one record far below Loki's
/// 256 KB line limit.
pub const LOG_MSG_MAX_BYTES: usize = 16 * 1024;

/// Upper bound of one encoded record: every text field at its limit with
/// every byte escaped (`\u00XX`, 6 bytes), plus numbers and keys.
pub const LOG_RECORD_MAX_BYTES: usize =
    (LOG_MSG_MAX_BYTES + 4 * LOG_FIELD_MAX_BYTES + LOG_SD_MAX_BYTES) * 6 + 512;

/// Longest `host`, `app`, `procid`, `msgid` field, in bytes.
pub const LOG_FIELD_MAX_BYTES: usize = 255;

/// Longest structured-data (`sd`) text, in bytes.
pub const LOG_SD_MAX_BYTES: usize = 4096;

/// Which parser understood a syslog line. Stable names; stored and used
/// as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`).
    Rfc5424,
    /// RFC 3164 / BSD syslog (`<PRI>Mmm dd hh:mm:ss HOST TAG: MSG`).
    Rfc3164,
    /// A vendor variant recognised by a dedicated rule (MikroTik
    /// RouterOS, Hikvision, Dahua, ...); the vendor is in `app`/`host`.
    Vendor,
    /// `<PRI>` followed by a message with no timestamp (Ubiquiti and
    /// many embedded devices).
    NoTimestamp,
    /// Nothing recognised: the whole line is the message.
    Raw,
}

impl LogFormat {
    /// Every format, for pre-registering counters.
    pub const ALL: [LogFormat; 5] = [
        LogFormat::Rfc5424,
        LogFormat::Rfc3164,
        LogFormat::Vendor,
        LogFormat::NoTimestamp,
        LogFormat::Raw,
    ];

    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogFormat::Rfc5424 => "rfc5424",
            LogFormat::Rfc3164 => "rfc3164",
            LogFormat::Vendor => "vendor",
            LogFormat::NoTimestamp => "no_timestamp",
            LogFormat::Raw => "raw",
        }
    }
}

/// One syslog record in a `log` batch.
///
/// Every record keeps what arrived: the receive time and the sender's
/// address are always set, and a line nothing could parse is kept whole as
/// `msg` with format `raw`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogRecordOut<'a> {
    /// The device's own timestamp, Unix ms, when the line had one that
    /// could be read (with the year and zone inferred where missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// When the agent received the line, Unix ms.
    pub rx: u64,
    /// Sender IP address as text.
    pub ip: &'a str,
    /// Host: the configured name for the sender, else the hostname in the
    /// line, else the sender IP. At most [`LOG_FIELD_MAX_BYTES`].
    pub host: &'a str,
    /// APP-NAME / TAG; empty when the line has none.
    pub app: &'a str,
    /// PROCID (RFC 5424) or the `[pid]` of an RFC 3164 tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procid: Option<&'a str>,
    /// MSGID (RFC 5424).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msgid: Option<&'a str>,
    /// Facility 0-23 (1, user, when the line had no PRI).
    pub facility: u8,
    /// Severity 0-7 (5, notice, when the line had no PRI).
    pub severity: u8,
    /// Which parser understood the line.
    pub format: LogFormat,
    /// The message text, valid UTF-8 (invalid bytes replaced by U+FFFD),
    /// at most [`LOG_MSG_MAX_BYTES`].
    pub msg: &'a str,
    /// RFC 5424 STRUCTURED-DATA as sent (`[id k="v"]...`), when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sd: Option<&'a str>,
    /// The line was longer than the receiver's limit and was cut.
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `log` payload: a batch of syslog records in receive order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogOut<'a> {
    /// Schema version.
    pub v: u32,
    /// See [`Header::site`].
    pub site: &'a str,
    /// See [`Header::boot`].
    pub boot: &'a str,
    /// See [`Header::seq`].
    pub seq: u64,
    /// See [`Header::ts`].
    pub ts: u64,
    /// 1 to [`MAX_LOG_RECORDS`] records.
    pub records: &'a [LogRecordOut<'a>],
}

impl<'a> LogOut<'a> {
    /// Builds a log batch payload.
    pub fn new(h: Header<'a>, records: &'a [LogRecordOut<'a>]) -> Self {
        LogOut {
            v: crate::SCHEMA_VERSION,
            site: h.site,
            boot: h.boot,
            seq: h.seq,
            ts: h.ts,
            records,
        }
    }
}

#[cfg(feature = "decode")]
pub use owned::*;

#[cfg(feature = "decode")]
mod owned {
    use super::{OfflineReason, State};
    use serde::Deserialize;
    use std::collections::BTreeMap;

    /// Decoded `status` payload.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct Status {
        /// Schema version.
        pub v: u32,
        /// Site id.
        pub site: String,
        /// Boot id.
        pub boot: String,
        /// Sequence number (0 for the Last Will).
        pub seq: u64,
        /// Agent timestamp, Unix ms.
        pub ts: u64,
        /// Online or offline.
        pub state: State,
        /// Why offline; `None` when online.
        #[serde(default)]
        pub reason: Option<OfflineReason>,
        /// Connection counter within the boot.
        pub session: u32,
        /// Agent version.
        pub agent_version: String,
        /// Heartbeat period in seconds.
        pub heartbeat_secs: u32,
    }

    /// Decoded `heartbeat` payload.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct Heartbeat {
        /// Schema version.
        pub v: u32,
        /// Site id.
        pub site: String,
        /// Boot id.
        pub boot: String,
        /// Sequence number.
        pub seq: u64,
        /// Agent timestamp, Unix ms.
        pub ts: u64,
        /// Agent version.
        pub agent_version: String,
        /// Heartbeat period in seconds.
        pub interval_secs: u32,
        /// Host uptime in seconds.
        pub uptime_secs: u64,
        /// Agent process uptime in seconds.
        pub agent_uptime_secs: u64,
        /// 1, 5, 15 minute load averages.
        pub load: [f32; 3],
        /// Total memory in bytes.
        pub mem_total_bytes: u64,
        /// Available memory in bytes.
        pub mem_available_bytes: u64,
        /// Agent RSS in bytes.
        pub agent_rss_bytes: u64,
        /// Clock plausibility (`ok`, `before_build`, `jumped`); absent from
        /// agents older than the field.
        #[serde(default)]
        pub clock: Option<String>,
        /// Agent counters by name; unknown names are kept.
        pub counters: BTreeMap<String, u64>,
        /// The uplink interface's counters; absent from agents older than
        /// the field and when the agent reads none.
        #[serde(default)]
        pub wan: Option<Wan>,
    }

    /// Decoded uplink counters (see [`super::WanOut`]).
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    pub struct Wan {
        /// Interface name.
        #[serde(rename = "if")]
        pub iface: String,
        /// Bytes received.
        pub rx_bytes: u64,
        /// Bytes sent.
        pub tx_bytes: u64,
        /// Receive errors.
        pub rx_errors: u64,
        /// Send errors.
        pub tx_errors: u64,
        /// Received packets dropped.
        pub rx_dropped: u64,
        /// Packets to send dropped.
        pub tx_dropped: u64,
        /// The interface's primary IPv4 address; absent from agents older
        /// than the field and when it has none.
        #[serde(default)]
        pub addr: Option<String>,
        /// What `addr` is (`public`, `cgnat`, `private`, ...; see
        /// [`super::wan_addr_class`]).
        #[serde(default)]
        pub addr_class: Option<String>,
        /// A global IPv6 address of the interface.
        #[serde(default)]
        pub addr6: Option<String>,
    }

    /// One decoded mount entry.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct Mount {
        /// Mount path.
        pub path: String,
        /// Filesystem type.
        pub fs_type: String,
        /// Total bytes.
        pub total_bytes: u64,
        /// Used bytes.
        pub used_bytes: u64,
        /// Available bytes.
        pub avail_bytes: u64,
        /// Used percent.
        pub used_pct: f32,
        /// Total inodes.
        pub inodes_total: u64,
        /// Free inodes.
        pub inodes_free: u64,
        /// Read-only mount.
        pub read_only: bool,
        /// Sample error code, if any.
        #[serde(default)]
        pub error: Option<String>,
    }

    /// Decoded `disk` payload.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct Disk {
        /// Schema version.
        pub v: u32,
        /// Site id.
        pub site: String,
        /// Boot id.
        pub boot: String,
        /// Sequence number.
        pub seq: u64,
        /// Agent timestamp, Unix ms.
        pub ts: u64,
        /// Mount entries.
        pub mounts: Vec<Mount>,
    }

    /// One decoded syslog record; see [`super::LogRecordOut`].
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct LogRecord {
        /// Device timestamp, Unix ms.
        #[serde(default)]
        pub ts: Option<u64>,
        /// Receive time, Unix ms.
        pub rx: u64,
        /// Sender IP.
        pub ip: String,
        /// Host name.
        pub host: String,
        /// APP-NAME / TAG.
        pub app: String,
        /// PROCID.
        #[serde(default)]
        pub procid: Option<String>,
        /// MSGID.
        #[serde(default)]
        pub msgid: Option<String>,
        /// Facility 0-23.
        pub facility: u8,
        /// Severity 0-7.
        pub severity: u8,
        /// Parser that understood the line (a [`super::LogFormat`] name;
        /// kept as text so a newer agent's format does not fail decoding).
        pub format: String,
        /// Message text.
        pub msg: String,
        /// RFC 5424 structured data.
        #[serde(default)]
        pub sd: Option<String>,
        /// Cut at the receiver's line limit.
        #[serde(default)]
        pub truncated: bool,
    }

    /// Decoded `log` payload.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct Log {
        /// Schema version.
        pub v: u32,
        /// Site id.
        pub site: String,
        /// Boot id.
        pub boot: String,
        /// Sequence number.
        pub seq: u64,
        /// Agent timestamp, Unix ms.
        pub ts: u64,
        /// Records in receive order.
        pub records: Vec<LogRecord>,
    }
}

#[cfg(test)]
mod tests {
    use super::wan_addr_class;
    use core::net::Ipv4Addr;

    #[test]
    fn wan_address_classes_at_their_edges() {
        let class = |s: &str| wan_addr_class(s.parse::<Ipv4Addr>().expect("address"));
        for (addr, want) in [
            ("100.63.255.255", "public"),
            ("100.64.0.0", "cgnat"),
            ("100.100.3.7", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("100.128.0.0", "public"),
            ("10.0.0.1", "private"),
            ("172.15.255.255", "public"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("172.32.0.0", "public"),
            ("192.168.8.100", "private"),
            ("169.254.10.20", "link_local"),
            ("127.0.0.1", "loopback"),
            ("0.0.0.0", "reserved"),
            ("192.0.0.8", "reserved"),
            ("192.0.2.1", "reserved"),
            ("198.18.0.1", "reserved"),
            ("198.19.255.255", "reserved"),
            ("198.20.0.1", "public"),
            ("198.51.100.7", "reserved"),
            ("203.0.113.7", "reserved"),
            ("224.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("81.2.69.142", "public"),
            ("8.8.8.8", "public"),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
    }
}
