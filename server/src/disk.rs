//! `homeward disk …`: the replicator on the command line. Thin: parse, call the crate, print.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use replicator::journal::Journal;
use replicator::sync::{Mode, SyncOptions, TargetOptions};
use replicator::{human_bytes, parse_size, Consistency, DiskImage, Format, Retention};

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Create a new sparse disk image.
    Create {
        #[arg(long, value_parser = parse_format)]
        format: Format,
        #[arg(long, value_parser = parse_size)]
        size: u64,
        path: PathBuf,
    },
    /// Show an image's format, virtual size and allocation.
    Info {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run one replication cycle from SRC to DST: a path; tcp://HOST:PORT for a `disk receive --token-file`; or
    /// tls://AGENT@HOST:PORT, with --agent-dir of an enrolled process server, for a master target's
    /// `disk receive --agent-dir`.
    Sync(SyncArgs),
    /// Be the target half of one cycle: over TCP with a shared token, or as an enrolled master target over mutual
    /// TLS (--agent-dir), accepting only an enrolled process server the control plane vouches for.
    Receive {
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// File holding the shared token both halves must present (plain TCP).
        #[arg(long, value_name = "FILE", required_unless_present = "agent_dir", conflicts_with = "agent_dir")]
        token_file: Option<PathBuf>,
        /// The folder of an enrolled master target agent: receive over mutual TLS as that agent.
        #[arg(long, value_name = "DIR")]
        agent_dir: Option<PathBuf>,
        #[command(flatten)]
        retention: RetentionArgs,
        dst: PathBuf,
    },
    /// List the recovery points kept for a target disk.
    Points {
        dst: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write the bytes of a recovery point to a new image (format from FILE's extension).
    Restore {
        dst: PathBuf,
        /// The point's number (from `disk points`) or its id.
        #[arg(long)]
        point: String,
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Time our delta, full and incremental syncs against rsync, cp and the read floor.
    Bench {
        #[arg(long, value_parser = parse_size, default_value = "1G")]
        size: u64,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Folder for the benchmark's images (default: the system temp folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[arg(long, default_value = "auto")]
    mode: Mode,
    #[arg(long, value_parser = parse_size, default_value = "64K")]
    block_size: u64,
    /// Durable checkpoint interval: the most a crash makes the next run send again.
    #[arg(long, value_parser = parse_size, default_value = "32M")]
    chunk_size: u64,
    /// Bandwidth cap, bytes per second (e.g. 100M).
    #[arg(long, value_parser = parse_size)]
    bwlimit: Option<u64>,
    /// The source is quiesced: record an app-consistent point.
    #[arg(long)]
    app_consistent: bool,
    #[arg(long)]
    point_id: Option<String>,
    /// Leave the source's change tracking alone (a one-off copy to another target).
    #[arg(long)]
    no_track: bool,
    /// Shared token for a tcp:// target.
    #[arg(long, value_name = "FILE", conflicts_with = "agent_dir")]
    token_file: Option<PathBuf>,
    /// The folder of an enrolled process server agent, for a tls:// target.
    #[arg(long, value_name = "DIR")]
    agent_dir: Option<PathBuf>,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Print the report as one JSON line instead of the summary.
    #[arg(long)]
    json: bool,
    src: PathBuf,
    dst: String,
}

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Keep at most this many recovery points.
    #[arg(long)]
    keep_points: Option<usize>,
    /// Drop points older than this (e.g. 72h, 30m, 7d).
    #[arg(long, value_parser = parse_duration_ms)]
    keep_for: Option<u64>,
}

impl RetentionArgs {
    fn policy(&self) -> Retention {
        Retention { max_points: self.keep_points, max_age_ms: self.keep_for }
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration; use e.g. 30m, 72h or 7d"))?;
    let ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: use a unit s, m, h or d")),
    };
    Ok(n * ms)
}

/// Input the operator can fix (2) versus a failure while working (1).
pub fn exit_code(e: &replicator::Error) -> u8 {
    match e {
        replicator::Error::Image { .. } | replicator::Error::Invalid(_) => 2,
        _ => 1,
    }
}

pub fn run(cmd: DiskCommand) -> Result<(), replicator::Error> {
    match cmd {
        DiskCommand::Create { format, size, path } => {
            let img = DiskImage::create(&path, format, size)?;
            println!("created {} ({}, {})", img.path.display(), img.format, human_bytes(img.size));
        }
        DiskCommand::Info { path, json } => {
            let img = DiskImage::open(&path)?;
            let allocated = img.allocated_bytes()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "path": img.path, "format": img.format.qemu_name(), "virtual_size": img.size,
                        "data_file": img.data_path, "allocated": allocated,
                    })
                );
            } else {
                println!("image:        {}", img.path.display());
                println!("format:       {}", img.format);
                println!("virtual size: {} ({} bytes)", human_bytes(img.size), img.size);
                println!("data file:    {}", img.data_path.display());
                println!("allocated:    {}", human_bytes(allocated));
            }
        }
        DiskCommand::Sync(a) => sync(a)?,
        DiskCommand::Receive { listen, token_file: None, agent_dir: Some(agent_dir), retention, dst } => {
            let opts = TargetOptions { token: String::new(), retention: retention.policy(), after_commit: None };
            let wire = runtime()?
                .block_on(crate::agent_link::receive(&agent_dir, listen, &dst, opts))
                .map_err(replicator::Error::Protocol)?;
            let (sent, received) = wire.totals();
            println!(
                "received a verified cycle into {}; on the wire (TLS included): received {}, sent {}",
                dst.display(),
                human_bytes(received),
                human_bytes(sent)
            );
        }
        DiskCommand::Receive { listen, token_file, retention, dst, .. } => {
            let token_file = token_file.ok_or_else(|| {
                replicator::Error::Invalid("pass --token-file (plain TCP) or --agent-dir (mutual TLS)".into())
            })?;
            let token = read_token(&token_file)?;
            let listener = std::net::TcpListener::bind(listen)
                .map_err(|e| replicator::Error::Invalid(format!("cannot listen on {listen}: {e}")))?;
            let addr = listener.local_addr().map_err(|e| replicator::Error::Invalid(e.to_string()))?;
            println!("receiving on {addr}");
            let _ = std::io::stdout().flush();
            replicator::sync::receive_tcp(
                &listener,
                &dst,
                &TargetOptions { token, retention: retention.policy(), after_commit: None },
            )?;
            println!("received a verified cycle into {}", dst.display());
        }
        DiskCommand::Points { dst, json } => {
            let img = DiskImage::open(&dst)?;
            let j = Journal::open(&img.state_dir().join("points"))?;
            if json {
                println!("{}", serde_json::to_string(j.points()).unwrap());
            } else if j.points().is_empty() {
                println!("no recovery points for {} yet: run `homeward disk sync` to it first", dst.display());
            } else {
                let latest = j.points().last().map_or(0, |p| p.created_at_ms);
                println!("{:>4}  {:<22} {:<17} {:>12}  {:>10}", "#", "id", "consistency", "changed", "age vs latest");
                for p in j.points() {
                    let behind = (latest - p.created_at_ms) as f64 / 1000.0;
                    println!(
                        "{:>4}  {:<22} {:<17} {:>12}  {:>9.1}s",
                        p.seq,
                        p.id,
                        p.consistency.to_string(),
                        human_bytes(p.changed_bytes),
                        behind
                    );
                }
            }
        }
        DiskCommand::Restore { dst, point, to } => {
            let img = DiskImage::open(&dst)?;
            let j = Journal::open(&img.state_dir().join("points"))?;
            let seq = match point.parse::<u64>() {
                Ok(n) => n,
                Err(_) => j.points().iter().find(|p| p.id == point).map(|p| p.seq).ok_or_else(|| {
                    replicator::Error::Invalid(format!(
                        "no recovery point with id {point:?}; see `homeward disk points`"
                    ))
                })?,
            };
            let p = j.restore(&img, seq, &to)?;
            println!("restored point {} ({}, {}) to {}; digest verified", p.seq, p.id, p.consistency, to.display());
        }
        DiskCommand::Bench { size, rounds, dir, json } => {
            let exe = std::env::current_exe().map_err(|e| replicator::Error::Invalid(e.to_string()))?;
            let opts = replicator::bench::BenchOptions { size, rounds: rounds.max(1), dir, homeward: exe };
            let report = replicator::bench::run(&opts, |line| {
                if !json {
                    println!("{line}");
                }
            })?;
            if json {
                println!("{}", serde_json::to_string(&report.summary).unwrap());
            }
        }
    }
    Ok(())
}

/// A runtime for the TLS relay of an agent link (the replicator's halves run on its blocking threads).
fn runtime() -> Result<tokio::runtime::Runtime, replicator::Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| replicator::Error::Invalid(format!("cannot start the async runtime: {e}")))
}

fn read_token(path: &std::path::Path) -> Result<String, replicator::Error> {
    let t = std::fs::read_to_string(path).map_err(|e| replicator::Error::io(path, e))?.trim().to_owned();
    if t.is_empty() {
        return Err(replicator::Error::Invalid(format!("{}: the token file is empty", path.display())));
    }
    Ok(t)
}

fn sync(a: SyncArgs) -> Result<(), replicator::Error> {
    let block_size = u32::try_from(a.block_size)
        .map_err(|_| replicator::Error::Invalid(format!("block size {} is too large", a.block_size)))?;
    let mut opts = SyncOptions {
        mode: a.mode,
        block_size,
        chunk_bytes: a.chunk_size,
        bandwidth: a.bwlimit,
        consistency: if a.app_consistent { Consistency::AppConsistent } else { Consistency::CrashConsistent },
        point_id: a.point_id,
        retention: a.retention.policy(),
        track: !a.no_track,
        ..SyncOptions::default()
    };
    if std::io::stderr().is_terminal() && !a.json {
        opts.progress = Some(Arc::new(|p: &replicator::Progress| {
            let pct = if p.total == 0 { 100.0 } else { p.done as f64 * 100.0 / p.total as f64 };
            let filled = (pct / 5.0) as usize;
            let eta = p.eta.map_or("--".into(), |d| format!("{:.0}s", d.as_secs_f64()));
            eprint!(
                "\r[{}{}] {pct:5.1}%  {}/s  sent {}  ETA {eta}   ",
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20)),
                human_bytes(p.rate as u64),
                human_bytes(p.sent)
            );
        }));
    }
    let mut wire = None;
    let mut rate_cap = None;
    let r = if let Some(target) = a.dst.strip_prefix("tls://") {
        let Some(agent_dir) = &a.agent_dir else {
            return Err(replicator::Error::Invalid(
                "a tls:// target needs --agent-dir of an enrolled process server".into(),
            ));
        };
        let (r, link) = runtime()?
            .block_on(crate::agent_link::send(agent_dir, target.trim_end_matches('/'), &a.src, opts.clone()))
            .map_err(replicator::Error::Protocol)?;
        wire = Some(link.wire.totals());
        rate_cap = link.rate_cap;
        r
    } else if a.agent_dir.is_some() {
        return Err(replicator::Error::Invalid("--agent-dir is for a tls://AGENT@HOST:PORT target".into()));
    } else if let Some(addr) = a.dst.strip_prefix("tcp://") {
        let Some(token_file) = &a.token_file else {
            return Err(replicator::Error::Invalid("a tcp:// target needs --token-file".into()));
        };
        opts.token = read_token(token_file)?;
        replicator::sync::send_tcp(&a.src, addr.trim_end_matches('/'), &opts)?
    } else {
        replicator::sync::sync(&a.src, std::path::Path::new(&a.dst), &opts)?
    };
    if opts.progress.is_some() {
        eprintln!();
    }
    if a.json {
        let mut v = serde_json::to_value(&r).unwrap();
        if let Some((sent, received)) = wire {
            v["wire_bytes_sent"] = sent.into();
            v["wire_bytes_received"] = received.into();
            v["rate_cap"] = rate_cap.into();
        }
        println!("{v}");
        return Ok(());
    }
    let secs = r.elapsed_ms as f64 / 1000.0;
    println!(
        "synced {} → {}: {}{}",
        a.src.display(),
        a.dst,
        r.mode,
        if r.requested != r.mode { format!(" (requested {})", r.requested) } else { String::new() }
    );
    if let Some(why) = &r.fallback {
        println!("  fell back because {why}");
    }
    if let Some(b) = r.resumed_from_block {
        println!("  resumed an interrupted cycle from block {b}");
    }
    println!(
        "  disk {}, blocks of {}: {} total, {} changed",
        human_bytes(r.size),
        human_bytes(r.block_size as u64),
        r.blocks_total,
        r.blocks_changed
    );
    println!(
        "  read {}, sent {} (data {}), received {} (hash list and replies)",
        human_bytes(r.bytes_read),
        human_bytes(r.bytes_sent),
        human_bytes(r.data_bytes),
        human_bytes(r.bytes_received)
    );
    if let Some((sent, received)) = wire {
        println!("  on the wire (TLS included): sent {}, received {}", human_bytes(sent), human_bytes(received));
    }
    if let Some(cap) = rate_cap {
        println!("  capped at {}/s by the control plane", human_bytes(cap));
    }
    println!("  time {secs:.2} s, {}/s over the disk", human_bytes((r.size as f64 / secs.max(1e-3)) as u64));
    println!("  recovery point {} ({}), {}, digest {}", r.point.seq, r.point.id, r.point.consistency, &r.digest[..16]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_a_unit() {
        assert_eq!(parse_duration_ms("72h"), Ok(72 * 3_600_000));
        assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
        assert!(parse_duration_ms("5").is_err());
        assert!(parse_duration_ms("h").is_err());
    }
}
