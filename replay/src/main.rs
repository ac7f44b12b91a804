//! `gmlake-replay`: replays PyTorch allocation traces through gmlake on a simulated device and
//! reports utilization, driver calls and leaks beside PyTorch's own figures from the trace.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use gmlake_core::config::parse_size;
use gmlake_core::DriverCall;
use gmlake_replay::{replay_files, report, Options};
use std::path::PathBuf;

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
    /// destroy_event, record_event, query_event, synchronize_stream, synchronize_device,
    /// export_handle.
    #[arg(long = "inject-fault", value_name = "KIND:N")]
    inject_fault: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// For snapshot pickles: the device whose trace to replay (default: the first with events).
    #[arg(long)]
    device: Option<usize>,
    /// Also find the smallest capacity at which each allocator runs the trace with no
    /// out-of-memory (2 MiB apart; several replays per allocator).
    #[arg(long)]
    fit: bool,
    /// Draw live bytes and each allocator's reserved bytes over the trace into FILE (.svg, or
    /// .html); with several traces, one file each, named FILE's stem, the trace, FILE's extension.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Also replay each trace N times on one allocator, as a job repeats its steps, and report
    /// each pass: new stitches, handles created, driver time, peak reserved bytes.
    #[arg(long, value_name = "N", default_value_t = 1)]
    passes: u32,
    /// Model a GPU that runs behind the CPU, as in a live job: gmlake's events complete only at a
    /// synchronization (default: at once, the most favourable case).
    #[arg(long)]
    late_events: bool,
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

fn main() -> Result<()> {
    let args = Args::parse();
    let mut opts = Options {
        config: args.config.clone(),
        faults: args
            .inject_fault
            .iter()
            .map(|f| parse_fault(f))
            .collect::<Result<Vec<_>>>()?,
        device: args.device,
        progress: true,
        fit: args.fit,
        passes: args.passes,
        late_events: args.late_events,
        ..Options::default()
    };
    if let Some(c) = &args.capacity {
        opts.capacity = parse_size(c, 1)?;
    }
    let rows = replay_files(&args.traces, &opts, args.plot.as_deref())?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => print!("{}{}", report::table(&rows), report::passes_table(&rows)),
    }
    Ok(())
}
