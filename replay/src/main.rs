//! `gmlake-replay`: replays PyTorch allocation traces through gmlake on a simulated device and
//! reports utilization, driver calls and leaks beside PyTorch's own figures from the trace.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use gmlake_core::config::parse_size;
use gmlake_core::replay::Replayer;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Config, DriverCall};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod report;
use report::Row;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Replays allocation traces (text or PyTorch snapshot pickles, gzip or plain) through gmlake on a
/// simulated device and reports utilization beside PyTorch's native allocator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// gmlake configuration, e.g. `frag_limit:64MB,reuse_limit:10,defrag_level:0`.
    #[arg(long, default_value = "")]
    config: String,
    /// Capacity of the simulated device (bytes, or with a unit: 46GiB). Default: an H200's.
    #[arg(long)]
    capacity: Option<String>,
    /// Make the Nth call of a driver call kind fail, e.g. `map:10` (repeatable). Kinds: create_handle,
    /// release_handle, reserve_range, free_range, map, unmap, set_access, create_event,
    /// destroy_event, record_event, query_event, synchronize_stream, synchronize_device.
    #[arg(long = "inject-fault", value_name = "KIND:N")]
    inject_fault: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// For snapshot pickles: the device whose trace to replay (default: the first with events).
    #[arg(long)]
    device: Option<usize>,
    /// Trace files.
    #[arg(required = true)]
    traces: Vec<PathBuf>,
}

fn parse_fault(text: &str) -> Result<(DriverCall, u64)> {
    let (kind, n) = text
        .split_once(':')
        .context("--inject-fault takes KIND:N")?;
    let call = DriverCall::from_name(kind)
        .with_context(|| format!("unknown driver call kind `{kind}`"))?;
    let n: u64 = n
        .parse()
        .with_context(|| format!("`{n}` is not a call number"))?;
    if n == 0 {
        bail!("call numbers start at 1");
    }
    Ok((call, n))
}

fn replay_one(
    path: &Path,
    args: &Args,
    cfg: &Config,
    capacity: u64,
    faults: &[(DriverCall, u64)],
) -> Result<Row> {
    let events = gmlake_trace::read_trace(path, args.device)?;
    let mut dev = SimulatedDevice::new(capacity);
    for &(call, n) in faults {
        dev.inject_fault(call, n);
    }
    let mut replayer = Replayer::new(dev, cfg.clone())?;
    let bar = if std::io::stderr().is_terminal() && events.len() > 100_000 {
        let bar = ProgressBar::new(events.len() as u64);
        bar.set_style(ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} events ({eta})",
        )?);
        bar.set_message(path.display().to_string());
        Some(bar)
    } else {
        None
    };
    let start = Instant::now();
    for (i, ev) in events.iter().enumerate() {
        replayer.step(ev);
        if let Some(bar) = &bar {
            if i % 65_536 == 0 {
                bar.set_position(i as u64);
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = replayer
        .finish()
        .with_context(|| format!("{}: teardown failed", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Row::new(name, report, elapsed, &args.config))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cfg = Config::parse(&args.config)?;
    let capacity = match &args.capacity {
        Some(c) => parse_size(c, 1)?,
        None => gmlake_core::sim::H200_TOTAL_BYTES,
    };
    let faults = args
        .inject_fault
        .iter()
        .map(|f| parse_fault(f))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    for path in &args.traces {
        rows.push(replay_one(path, &args, &cfg, capacity, &faults)?);
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => print!("{}", report::table(&rows)),
    }
    Ok(())
}
