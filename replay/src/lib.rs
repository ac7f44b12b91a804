//! # gmlake-replay
//!
//! Replays PyTorch allocation traces (text, or snapshot pickles from
//! `torch.cuda.memory._dump_snapshot`, gzip or plain) through gmlake on a simulated device and
//! reports what it reserved beside PyTorch's own figures from the trace. The `gmlake-replay`
//! command and the Python package (`gmlake.replay`, `python -m gmlake replay`) are both built on
//! [`replay_file`] and [`report`], so they report the same figures.

pub mod passes;
pub mod plot;
pub mod report;

/// The README's Rust example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

use anyhow::{Context, Result};
use gmlake_core::replay::{ReplayReport, Replayer, TraceAction, TraceEvent};
use gmlake_core::sim::{SimulatedDevice, H200_TOTAL_BYTES};
use gmlake_core::{Config, DriverCall};
use gmlake_peers::Peer;
use indicatif::{ProgressBar, ProgressStyle};
use report::{PeerRow, Row, Series};
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
    /// Also find, for gmlake and each peer, the smallest capacity at which the trace runs with
    /// no out-of-memory ([`FIT_STEP`] bytes apart; several replays each).
    pub fit: bool,
    /// Keep the bytes over the trace (live, and reserved by each allocator) for a plot.
    pub series: bool,
    /// Also replay the trace this many times on one allocator and report each pass
    /// ([`passes::replay_passes`]); 0 or 1: not.
    pub passes: u32,
    /// Model a GPU that runs behind the CPU, as in a live job: gmlake's events complete only at a
    /// synchronization (`SimulatedDevice::set_event_latency`). Default false: every event
    /// completes at once, the most favourable case.
    pub late_events: bool,
}

/// The resolution of the fit capacity, bytes: the granularity of the H200 (a fit finer than the
/// driver's allocation unit would mean nothing).
pub const FIT_STEP: u64 = 2 << 20;

/// At most this many points per curve are kept for a plot (the highest value of each stretch of
/// events, so that no peak is lost).
pub const SERIES_POINTS: usize = 2000;

impl Default for Options {
    /// The default configuration on an H200, no faults, no progress bar.
    fn default() -> Self {
        Options {
            config: String::new(),
            capacity: H200_TOTAL_BYTES,
            faults: Vec::new(),
            device: None,
            progress: false,
            fit: false,
            series: false,
            passes: 0,
            late_events: false,
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
    let (events, device) = gmlake_trace::read_trace_of(path, opts.device)?;
    let bar = progress_bar(path, events.len(), opts.progress)?;
    let start = Instant::now();
    let mut gmlake_series = Vec::new();
    let report = run_gmlake(&events, &cfg, opts, opts.capacity, |i, reserved| {
        if let Some(bar) = &bar {
            if i % 65_536 == 0 {
                bar.set_position(i as u64);
            }
        }
        if opts.series {
            gmlake_series.push((i as u64, reserved));
        }
    })
    .with_context(|| format!("{}: teardown failed", path.display()))?;
    let elapsed = start.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut row = Row::new(name, report, elapsed, &opts.config);
    row.device = device;
    let lo = row.report.peak_active_bytes.saturating_sub(1);
    for peer in Peer::ALL {
        let r = gmlake_peers::replay(peer, &events, opts.capacity);
        let fit = opts.fit.then(|| {
            let hi = r.peak_reserved_bytes.max(lo + FIT_STEP);
            gmlake_peers::fit_capacity(
                lo,
                grow_until_it_fits(hi, opts.capacity, |c| {
                    gmlake_peers::replay(peer, &events, c).ooms == 0
                }),
                FIT_STEP,
                |c| gmlake_peers::replay(peer, &events, c).ooms == 0,
            )
        });
        row.peers.push(PeerRow {
            peer,
            report: r,
            fit_capacity_bytes: fit,
        });
    }
    if opts.fit {
        let fits =
            |c: u64| run_gmlake(&events, &cfg, opts, c, |_, _| {}).is_ok_and(|r| r.ooms == 0);
        let hi = grow_until_it_fits(
            row.report.peak_reserved_bytes.max(lo + FIT_STEP),
            opts.capacity,
            fits,
        );
        let fit = gmlake_peers::fit_capacity(lo, hi, FIT_STEP, fits);
        row.fit_capacity_bytes = Some(fit);
        row.fit_driver_us = run_gmlake(&events, &cfg, opts, fit, |_, _| {})
            .ok()
            .map(|r| r.estimated_driver_us);
    }
    if opts.series {
        row.series = Some(Series::new(&events, gmlake_series, &row.peers));
    }
    if opts.passes > 1 {
        row.passes =
            passes::replay_passes(&events, &cfg, opts.capacity, opts.passes, opts.late_events)?;
    }
    Ok(row)
}

/// Replays each trace of `paths` with `opts` ([`replay_file`]); with `plot`, draws each into a
/// file ([`plot::plot`]): `plot` itself for one trace, else `plot`'s stem, `-`, the trace's name,
/// `plot`'s extension. Says on stderr which files it wrote.
///
/// # Errors
/// As [`replay_file`]; a plot that cannot be written.
pub fn replay_files(
    paths: &[impl AsRef<Path>],
    opts: &Options,
    plot: Option<&Path>,
) -> Result<Vec<Row>> {
    let opts = Options {
        series: opts.series || plot.is_some(),
        ..opts.clone()
    };
    let mut rows = Vec::new();
    for path in paths {
        let mut row = replay_file(path.as_ref(), &opts)?;
        if let Some(plot) = plot {
            let out = if paths.len() == 1 {
                plot.to_path_buf()
            } else {
                let stem = plot
                    .file_stem()
                    .map_or("plot".into(), |s| s.to_string_lossy());
                let ext = plot
                    .extension()
                    .map_or("svg".into(), |s| s.to_string_lossy());
                let name = row.trace.split('.').next().unwrap_or("trace").to_string();
                plot.with_file_name(format!("{stem}-{name}.{ext}"))
            };
            plot::plot(&row, &out)?;
            eprintln!("wrote {}", out.display());
        }
        row.series = None;
        rows.push(row);
    }
    Ok(rows)
}

/// Replays `events` through gmlake on a simulated device of `capacity` bytes, telling `each`
/// the event index and the reserved bytes after every event.
fn run_gmlake(
    events: &[TraceEvent],
    cfg: &Config,
    opts: &Options,
    capacity: u64,
    mut each: impl FnMut(usize, u64),
) -> Result<ReplayReport> {
    let mut dev = SimulatedDevice::new(capacity);
    for &(call, n) in &opts.faults {
        dev.inject_fault(call, n);
    }
    if opts.late_events {
        dev.set_event_latency(u32::MAX);
    }
    let mut replayer = Replayer::new(dev, cfg.clone())?;
    for (i, ev) in events.iter().enumerate() {
        replayer.step(ev);
        each(
            i,
            replayer.allocator().stats_ref().reserved_bytes.all.current as u64,
        );
    }
    Ok(replayer.finish()?)
}

/// A capacity at which `fits` holds: `from`, doubled until it does, up to `max` (returned even if
/// it does not fit: the trace then needs more than the device has).
fn grow_until_it_fits(from: u64, max: u64, mut fits: impl FnMut(u64) -> bool) -> u64 {
    let mut c = from.min(max);
    while c < max && !fits(c) {
        c = (c * 2).min(max);
    }
    c
}

/// The bytes live over a trace: the running sum of allocations less frees, after each event.
pub fn live_bytes(events: &[TraceEvent]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut sizes = std::collections::HashMap::new();
    let mut live = 0u64;
    events.iter().enumerate().map(move |(i, e)| {
        match e.action {
            TraceAction::Alloc => {
                sizes.insert(e.addr, e.size);
                live += e.size;
            }
            TraceAction::FreeRequested => live -= sizes.remove(&e.addr).unwrap_or(0),
            _ => {}
        }
        (i as u64, live)
    })
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
