//! # gmlake-replay
//!
//! Replays PyTorch allocation traces (text, or snapshot pickles from
//! `torch.cuda.memory._dump_snapshot`, gzip or plain) through gmlake on a simulated device and
//! reports what it reserved beside PyTorch's own figures from the trace. The `gmlake-replay`
//! command and the Python package (`gmlake.replay`, `python -m gmlake replay`) are both built on
//! [`replay_file`] and [`report`], so they report the same figures.

pub mod report;

use anyhow::{Context, Result};
use gmlake_core::replay::Replayer;
use gmlake_core::sim::{SimulatedDevice, H200_TOTAL_BYTES};
use gmlake_core::{Config, DriverCall};
use indicatif::{ProgressBar, ProgressStyle};
use report::Row;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

/// How to replay: the configuration, the simulated device, and faults to inject.
#[derive(Clone, Debug)]
pub struct Options {
    /// gmlake's configuration string (as for `Config::parse`).
    pub config: String,
    /// The simulated device's memory, in bytes.
    pub capacity: u64,
    /// Driver calls to fail: the Nth call of a kind (1-based).
    pub faults: Vec<(DriverCall, u64)>,
    /// For snapshot pickles: the device whose trace to replay (default: the first with events).
    pub device: Option<usize>,
    /// Show a progress bar on a terminal for long traces.
    pub progress: bool,
}

impl Default for Options {
    /// The default configuration on an H200, no faults, no progress bar.
    fn default() -> Self {
        Options {
            config: String::new(),
            capacity: H200_TOTAL_BYTES,
            faults: Vec::new(),
            device: None,
            progress: false,
        }
    }
}

/// Replays the trace at `path` with `opts` and reports.
///
/// # Errors
/// An unreadable or malformed trace (naming the file and line), a bad configuration, or a failed
/// teardown.
pub fn replay_file(path: &Path, opts: &Options) -> Result<Row> {
    let cfg = Config::parse(&opts.config)?;
    let events = gmlake_trace::read_trace(path, opts.device)?;
    let mut dev = SimulatedDevice::new(opts.capacity);
    for &(call, n) in &opts.faults {
        dev.inject_fault(call, n);
    }
    let mut replayer = Replayer::new(dev, cfg)?;
    let bar = progress_bar(path, events.len(), opts.progress)?;
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
    Ok(Row::new(name, report, elapsed, &opts.config))
}

/// A progress bar for a long trace on a terminal, if asked for.
fn progress_bar(path: &Path, events: usize, wanted: bool) -> Result<Option<ProgressBar>> {
    if !(wanted && std::io::stderr().is_terminal() && events > 100_000) {
        return Ok(None);
    }
    let bar = ProgressBar::new(events as u64);
    bar.set_style(ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} events ({eta})",
    )?);
    bar.set_message(path.display().to_string());
    Ok(Some(bar))
}
