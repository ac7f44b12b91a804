//! `gmlake._core`, the native half of the Python package `gmlake` (python/gmlake). The same shared
//! library also exports gmlake's C API and PyTorch's pluggable-allocator entry points
//! (`gmlake_torch_malloc`, ...), so `torch.cuda.memory.CUDAPluggableAllocator(gmlake._core.__file__,
//! ...)` and this module share one allocator per device.

use gmlake_core::replay::Replayer;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::Config;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::Path;
use std::time::Instant;

// Keep the C API (and PyTorch's entry points) linked into this library.
pub use gmlake as c_api;

/// Replays a trace (text or PyTorch snapshot pickle, gzip or plain) through gmlake on a simulated
/// device and returns the figures of `gmlake-replay --format json` as a dict.
///
/// Raises OSError or ValueError (naming the file and line) for an unreadable or malformed trace,
/// ValueError for a bad configuration.
#[pyfunction]
#[pyo3(signature = (path, config=None, capacity=None))]
fn replay<'py>(
    py: Python<'py>,
    path: &str,
    config: Option<&str>,
    capacity: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg =
        Config::parse(config.unwrap_or("")).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let events = gmlake_trace::read_trace(Path::new(path), None).map_err(|e| match e {
        gmlake_trace::TraceError::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    })?;
    let capacity = capacity.unwrap_or(gmlake_core::sim::H200_TOTAL_BYTES);
    let (r, elapsed) = py
        .detach(move || {
            let mut replayer = Replayer::new(SimulatedDevice::new(capacity), cfg)?;
            let start = Instant::now();
            for ev in &events {
                replayer.step(ev);
            }
            let elapsed = start.elapsed();
            Ok::<_, gmlake_core::Error>((replayer.finish()?, elapsed))
        })
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let d = PyDict::new(py);
    let name = Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned());
    d.set_item("trace", name)?;
    d.set_item("config", config.unwrap_or(""))?;
    for (k, v) in [
        ("events", r.events),
        ("allocs", r.allocs),
        ("frees", r.frees),
        ("unmatched_frees", r.unmatched_frees),
        ("duplicate_allocs", r.duplicate_allocs),
        ("peak_active_bytes", r.peak_active_bytes),
        ("peak_reserved_bytes", r.peak_reserved_bytes),
        ("native_peak_reserved_bytes", r.native_peak_reserved_bytes),
        ("native_segment_allocs", r.native_segment_allocs),
        ("ooms", r.ooms),
        ("num_stitches", r.num_stitches),
        ("num_stitch_reuses", r.num_stitch_reuses),
        ("num_stitch_gc", r.num_stitch_gc),
        ("end_handles", r.end_handles),
        ("end_ranges", r.end_ranges),
        ("end_mappings", r.end_mappings),
        ("end_events", r.end_events),
    ] {
        d.set_item(k, v)?;
    }
    d.set_item("utilization", r.utilization)?;
    d.set_item("native_utilization", r.native_utilization)?;
    d.set_item("estimated_driver_us", r.estimated_driver_us)?;
    d.set_item("native_estimated_driver_us", r.native_estimated_driver_us)?;
    d.set_item("teardown_driver_us", r.teardown_driver_us)?;
    let ns = if r.ops == 0 {
        0.0
    } else {
        elapsed.as_nanos() as f64 / r.ops as f64
    };
    d.set_item("replay_ns_per_op", ns)?;
    let calls = PyDict::new(py);
    for (call, n) in r.driver_calls.iter() {
        calls.set_item(call.name(), n)?;
    }
    d.set_item("driver_calls", calls)?;
    Ok(d)
}

/// Checks a configuration string; raises ValueError (listing the valid keys) if it is bad.
#[pyfunction]
fn check_config(config: &str) -> PyResult<()> {
    Config::parse(config)
        .map(|_| ())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Sets the configuration of the allocators PyTorch will use (before the first allocation).
/// Raises ValueError for a bad configuration or when allocators already exist.
#[pyfunction]
#[pyo3(signature = (config=None))]
fn configure(config: Option<&str>) -> PyResult<()> {
    gmlake::configure_torch(config).map_err(PyValueError::new_err)
}

/// All statistics of device `device`'s allocator as flat JSON (PyTorch's `memory_stats()` keys,
/// then `gmlake.*`). Raises RuntimeError without a driver or device.
#[pyfunction]
fn stats_json(device: i32) -> PyResult<String> {
    gmlake::with_torch_allocator(device, |a| {
        let driver_us = gmlake_core::Device::books(a.device()).map(|b| b.driver_us);
        Ok(gmlake::stats_json_of(a.stats_ref(), driver_us))
    })
    .map_err(PyRuntimeError::new_err)
}

/// Device `device`'s allocator snapshot as JSON (the format of `gmlake_snapshot_json`).
#[pyfunction]
fn snapshot_json(device: i32) -> PyResult<String> {
    gmlake::with_torch_allocator(device, |a| Ok(gmlake::snapshot_json_of(&a.snapshot())))
        .map_err(PyRuntimeError::new_err)
}

/// Sets device `device`'s peak statistics to their current values.
#[pyfunction]
fn reset_peak_stats(device: i32) -> PyResult<()> {
    gmlake::with_torch_allocator(device, |a| {
        a.reset_peak_stats();
        Ok(())
    })
    .map_err(PyRuntimeError::new_err)
}

/// Devices whose allocator exists.
#[pyfunction]
fn devices() -> Vec<i32> {
    gmlake::torch_devices()
}

/// Whether a CUDA driver library can be loaded.
#[pyfunction]
fn driver_present() -> bool {
    gmlake_cuda::driver_present()
}

/// The native module.
#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(replay, m)?)?;
    m.add_function(wrap_pyfunction!(check_config, m)?)?;
    m.add_function(wrap_pyfunction!(configure, m)?)?;
    m.add_function(wrap_pyfunction!(stats_json, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot_json, m)?)?;
    m.add_function(wrap_pyfunction!(reset_peak_stats, m)?)?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(driver_present, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
