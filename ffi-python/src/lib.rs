//! `gmlake._core`, the native half of the Python package `gmlake` (python/gmlake). The same shared
//! library also exports gmlake's C API and PyTorch's pluggable-allocator entry points
//! (`gmlake_torch_malloc`, ...), so `torch.cuda.memory.CUDAPluggableAllocator(gmlake._core.__file__,
//! ...)` and this module share one allocator per device.

use gmlake_core::Config;
use gmlake_replay::{replay_files, report, Options};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::path::Path;

// Keep the C API (and PyTorch's entry points) linked into this library.
pub use gmlake as c_api;

/// The replay options of the Python functions (the simulated device: an H200 unless `capacity`).
fn options(config: Option<&str>, capacity: Option<u64>) -> PyResult<Options> {
    let config = config.unwrap_or("");
    Config::parse(config).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut opts = Options {
        config: config.to_string(),
        ..Options::default()
    };
    if let Some(c) = capacity {
        opts.capacity = c;
    }
    Ok(opts)
}

/// Replays traces (text or PyTorch snapshot pickles, gzip or plain) through gmlake and models of
/// PyTorch's allocators on a simulated device, as `gmlake-replay` does, releasing the GIL
/// meanwhile; `fit` also finds each allocator's smallest capacity, `plot` draws each trace to a
/// file, `passes` above 1 replays each that many times on one allocator, `device` picks a
/// snapshot's GPU, `late_events` models a GPU that runs behind the CPU. Returns the JSON rows of
/// `gmlake-replay --format json` and its table.
///
/// Raises OSError for an unreadable trace or an unwritable plot, ValueError (naming the file and
/// line) for a malformed trace or a bad configuration.
#[pyfunction]
#[pyo3(signature = (paths, config=None, capacity=None, fit=false, plot=None, passes=1, device=None, late_events=false))]
// Python's keyword arguments, one per option of the command line.
#[allow(clippy::too_many_arguments)]
fn replay(
    py: Python<'_>,
    paths: Vec<String>,
    config: Option<&str>,
    capacity: Option<u64>,
    fit: bool,
    plot: Option<String>,
    passes: u32,
    device: Option<usize>,
    late_events: bool,
) -> PyResult<(String, String)> {
    let opts = Options {
        fit,
        passes,
        device,
        late_events,
        ..options(config, capacity)?
    };
    let rows = py
        .detach(|| replay_files(&paths, &opts, plot.as_deref().map(Path::new)))
        .map_err(|e| match e.downcast_ref::<gmlake_trace::TraceError>() {
            Some(gmlake_trace::TraceError::Io { .. }) => PyOSError::new_err(format!("{e:#}")),
            None if e.to_string().starts_with("cannot write") => {
                PyOSError::new_err(format!("{e:#}"))
            }
            _ => PyValueError::new_err(format!("{e:#}")),
        })?;
    let json = serde_json::to_string(&rows).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok((json, report::table(&rows) + &report::passes_table(&rows)))
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
