//! `sitewatch-loadgen`: publishes what a fleet of simulated sites would, as
//! fast as the broker takes it, for the ingest benchmark in `scripts/bench/`.
//!
//! Each simulated site has its own boot id and sequence, and every round it
//! publishes one heartbeat and one disk message (with `--mounts` entries),
//! encoded with the same heap-free encoder as the real agent. Messages are
//! spread over `--connections` MQTT connections (QoS 1, acknowledged), so
//! the broker, not this tool, is the limit. Prints what it published.

use anyhow::Context;
use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use sitewatch_wire::payload::*;
use sitewatch_wire::topic::{Kind, Topic};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser, Debug)]
#[command(about = "Publish simulated sitewatch sites' heartbeat and disk messages")]
struct Args {
    /// Broker host (plain MQTT on loopback only; this is a benchmark tool).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long)]
    port: u16,
    /// Number of simulated sites.
    #[arg(long, default_value_t = 1000)]
    sites: usize,
    /// Rounds; each round every site publishes one heartbeat and one disk message.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Mount entries per disk message.
    #[arg(long, default_value_t = 2)]
    mounts: usize,
    /// MQTT connections to spread the sites over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.mounts <= MAX_MOUNTS, "at most {MAX_MOUNTS} mounts");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let sites: Vec<usize> = (0..args.sites)
            .filter(|s| s % args.connections == c)
            .collect();
        let host = args.host.clone();
        let (port, rounds, mounts) = (args.port, args.rounds, args.mounts);
        tasks.push(tokio::spawn(async move {
            publish_sites(c, &host, port, sites, rounds, mounts).await
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await.context("publisher task")??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "published {total} messages from {} sites in {secs:.2} s ({:.0} msg/s, all acknowledged by the broker)",
        args.sites,
        total as f64 / secs
    );
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn publish_sites(
    conn: usize,
    host: &str,
    port: u16,
    sites: Vec<usize>,
    rounds: usize,
    mounts: usize,
) -> anyhow::Result<u64> {
    let mut opts = MqttOptions::new(format!("sitewatch-loadgen-{conn}"), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(100);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let expected = (sites.len() * rounds * 2) as u64;
    let poller = tokio::spawn(async move {
        let mut acked = 0u64;
        while acked < expected {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("mqtt connection {conn}: {e}")),
            }
        }
        Ok(acked)
    });
    let boots: Vec<String> = sites
        .iter()
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect();
    let names: Vec<String> = sites.iter().map(|s| format!("site-{s:05}")).collect();
    let paths: Vec<String> = (0..mounts).map(|m| format!("/srv/rec{m}")).collect();
    let mut buf = vec![0u8; DISK_BUF_LEN];
    for round in 0..rounds {
        for (i, site) in names.iter().enumerate() {
            let base_seq = (round * 2 + 1) as u64;
            let h = Header {
                site,
                boot: &boots[i],
                seq: base_seq,
                ts: now_ms(),
            };
            let mut hb = HeartbeatOut::new(h, "0.1.0-bench", 30);
            hb.uptime_secs = 1000 + round as u64;
            hb.load = [0.5, 0.4, 0.3];
            hb.mem_total_bytes = 256 << 20;
            hb.mem_available_bytes = 128 << 20;
            hb.agent_rss_bytes = 3 << 20;
            hb.counters.published = base_seq;
            let n = sitewatch_wire::encode(&hb, &mut buf).context("encode heartbeat")?;
            let topic = Topic::new(site, Kind::Heartbeat, None)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_heapless();
            client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, buf[..n].to_vec())
                .await?;

            let ms: Vec<MountOut> = paths
                .iter()
                .map(|p| MountOut {
                    path: p,
                    fs_type: "ext4",
                    total_bytes: 4_000_000_000_000,
                    used_bytes: 3_000_000_000_000 + round as u64,
                    avail_bytes: 800_000_000_000,
                    used_pct: 78.9,
                    inodes_total: 244_000_000,
                    inodes_free: 243_000_000,
                    read_only: false,
                    error: None,
                })
                .collect();
            let h = Header {
                seq: base_seq + 1,
                ts: now_ms(),
                ..h
            };
            let n =
                sitewatch_wire::encode(&DiskOut::new(h, &ms), &mut buf).context("encode disk")?;
            let topic = Topic::new(site, Kind::Disk, None)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_heapless();
            client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, buf[..n].to_vec())
                .await?;
        }
    }
    let acked = poller.await.context("poller task")??;
    client.disconnect().await.ok();
    Ok(acked)
}
