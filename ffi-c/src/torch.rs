//! Entry points for PyTorch's `torch.cuda.memory.CUDAPluggableAllocator`: one process-wide
//! allocator per CUDA device, created on first use and configured from `GMLAKE_ALLOC_CONF` (or
//! [`gmlake_torch_configure`] called before). Signatures follow PyTorch's
//! `torch/csrc/cuda/CUDAPluggableAllocator.h`: `void*(size_t, int, cudaStream_t)` to allocate,
//! `void(void*, size_t, int, cudaStream_t)` to free, and the optional hooks.

use crate::api::{gmlake_allocator, new_allocator};
use crate::device::AnyDevice;
use crate::error::{set_error, Failure};
use gmlake_core::{Config, Error, StreamHandle};
use gmlake_cuda::CudaVmm;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Mutex;

/// Devices an allocator exists for, by ordinal. Allocators live until the process exits (PyTorch
/// may free memory during interpreter shutdown).
static DEVICES: Mutex<Vec<Option<&'static gmlake_allocator>>> = Mutex::new(Vec::new());
static CONFIG: Mutex<Option<String>> = Mutex::new(None);

extern "C-unwind" {
    /// Throws `std::runtime_error(message)` (src/torch_shim.cpp); never returns.
    fn gmlake_throw(message: *const c_char) -> !;
}

fn config() -> Result<Config, Failure> {
    let text = match CONFIG.lock().ok().and_then(|c| c.clone()) {
        Some(t) => t,
        None => std::env::var("GMLAKE_ALLOC_CONF").unwrap_or_default(),
    };
    Config::parse(&text).map_err(|e| Failure::from(Error::Config(e)))
}

/// The allocator of CUDA device `device`, created on first use.
fn device_allocator(device: i32) -> Result<&'static gmlake_allocator, Failure> {
    let index =
        usize::try_from(device).map_err(|_| crate::error::invalid(format!("device {device}")))?;
    let mut devices = DEVICES
        .lock()
        .map_err(|_| crate::error::invalid("poisoned device table"))?;
    if devices.len() <= index {
        devices.resize(index + 1, None);
    }
    if let Some(a) = devices[index] {
        return Ok(a);
    }
    let a: &'static gmlake_allocator = Box::leak(new_allocator(
        AnyDevice::Cuda(CudaVmm::new(device)?),
        config()?,
    )?);
    devices[index] = Some(a);
    Ok(a)
}

fn each_allocator(mut f: impl FnMut(&'static gmlake_allocator)) {
    let devices: Vec<&'static gmlake_allocator> = DEVICES
        .lock()
        .map(|d| d.iter().flatten().copied().collect())
        .unwrap_or_default();
    for a in devices {
        f(a);
    }
}

/// Sets the configuration of the allocators the PyTorch entry points create (a string as for
/// `gmlake_create_cuda`; NULL reverts to `GMLAKE_ALLOC_CONF`). Call it before the first allocation.
///
/// Errors: `GMLAKE_ERROR_CONFIG` for a bad configuration; `GMLAKE_ERROR_INVALID_ARGUMENT` if an
/// allocator already exists or the string is not UTF-8.
///
/// # Safety
/// `config` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_torch_configure(config: *const c_char) -> crate::gmlake_status {
    crate::error::guard("gmlake_torch_configure", || {
        if DEVICES
            .lock()
            .map(|d| d.iter().any(Option::is_some))
            .unwrap_or(true)
        {
            return Err(crate::error::invalid(
                "allocators already exist; configure before the first allocation",
            ));
        }
        let text = if config.is_null() {
            None
        } else {
            // SAFETY: documented contract.
            Some(
                unsafe { CStr::from_ptr(config) }
                    .to_str()
                    .map_err(|_| crate::error::invalid("not UTF-8"))?
                    .to_string(),
            )
        };
        if let Some(t) = &text {
            Config::parse(t).map_err(|e| Failure::from(Error::Config(e)))?;
        }
        if let Ok(mut c) = CONFIG.lock() {
            *c = text;
        }
        Ok(())
    })
}

/// The message of an allocation refused on a capturing stream.
pub const CAPTURE_REFUSED: &str = "cannot allocate on a stream that is capturing a CUDA graph: \
through PyTorch's pluggable allocator, gmlake is not told which memory a graph keeps, and could hand \
it to other tensors while the graph still writes into it. Use gmlake's full C++ allocator \
(gmlake.enable(mode=\"cpp\")), which keeps graph memory in private pools as PyTorch does";

/// Refuses an allocation on a stream that is capturing a CUDA graph: on this route gmlake is not
/// told when a capture begins or ends (PyTorch's pluggable allocator passes no pool hooks), so it
/// cannot keep the graph's memory apart, and reusing it would corrupt the graph's or the user's
/// data. One `cuStreamIsCapturing` per allocation.
fn refuse_capture(stream: StreamHandle) -> Result<(), Failure> {
    match gmlake_cuda::stream_is_capturing(stream) {
        Ok(true) => Err(crate::error::invalid(CAPTURE_REFUSED)),
        _ => Ok(()),
    }
}

/// PyTorch's allocation function: `size` bytes on CUDA device `device` for `stream`. Returns NULL
/// for a size of 0. An allocation on a stream that is capturing a CUDA graph is refused (see
/// `refuse_capture`). On failure it throws a C++ `std::runtime_error` whose message starts with
/// `CUDA out of memory.` when memory ran out (with the requested, reserved, allocated, device total
/// and free bytes), or `gmlake:` otherwise; PyTorch raises it as a Python `RuntimeError`.
///
/// # Safety
/// Called by PyTorch (or C++); the exception unwinds into the caller, which must be C++.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn gmlake_torch_malloc(
    size: usize,
    device: i32,
    stream: *mut c_void,
) -> *mut c_void {
    if size == 0 {
        return std::ptr::null_mut();
    }
    let result = std::panic::catch_unwind(|| {
        refuse_capture(StreamHandle(stream as u64))?;
        let a = device_allocator(device)?;
        a.inner
            .with(|a| Ok::<u64, Failure>(a.malloc(size as u64, StreamHandle(stream as u64))?))
    });
    let message = match result {
        Ok(Ok(p)) => return p as *mut c_void,
        Ok(Err(Failure(_, m))) => m,
        Err(_) => "gmlake: internal error (a bug in gmlake)".to_string(),
    };
    let message = if message.starts_with("CUDA out of memory.") {
        message
    } else {
        format!("gmlake: {message}")
    };
    set_error(&message);
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `c` lives until the exception has copied it; nothing else is held here.
    unsafe { gmlake_throw(c.as_ptr()) }
}

/// PyTorch's free function. Errors (an unknown pointer) cannot be reported to PyTorch: they are
/// left in `gmlake_last_error` and change nothing.
///
/// # Safety
/// `ptr` is NULL or was returned by `gmlake_torch_malloc` for `device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_torch_free(
    ptr: *mut c_void,
    size: usize,
    device: i32,
    stream: *mut c_void,
) {
    let _ = (size, stream);
    if ptr.is_null() {
        return;
    }
    crate::error::guard("gmlake_torch_free", || {
        let a = device_allocator(device)?;
        a.inner.with(|a| Ok(a.free(ptr as u64)?))
    });
}

/// PyTorch's init hook (`void(int device_count)`): nothing to do, allocators are created lazily.
#[unsafe(no_mangle)]
pub extern "C" fn gmlake_torch_init(device_count: i32) {
    let _ = device_count;
}

/// PyTorch's reset hook, called by `torch.cuda.empty_cache()`: empties every device's cache.
#[unsafe(no_mangle)]
pub extern "C" fn gmlake_torch_empty_cache() {
    each_allocator(|a| {
        crate::error::guard("gmlake_torch_empty_cache", || {
            a.inner.with(|a| Ok(a.empty_cache()?))
        });
    });
}

/// PyTorch's memory-fraction hook (`void(double fraction, int device)`).
#[unsafe(no_mangle)]
pub extern "C" fn gmlake_torch_set_memory_fraction(fraction: f64, device: i32) {
    crate::error::guard("gmlake_torch_set_memory_fraction", || {
        let a = device_allocator(device)?;
        a.inner.with(|a| Ok(a.set_memory_fraction(fraction)?))
    });
}

/// PyTorch's record-stream hook (`void(void* ptr, cudaStream_t stream)`), called by
/// `Tensor.record_stream`.
///
/// # Safety
/// `ptr` was returned by `gmlake_torch_malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_torch_record_stream(ptr: *mut c_void, stream: *mut c_void) {
    each_allocator(|a| {
        let _ = a
            .inner
            .with(|a| a.record_stream(ptr as u64, StreamHandle(stream as u64)));
    });
}

/// The process-wide allocator of CUDA device `device` (created if needed), for statistics through
/// the C API (`gmlake_get_stats`, `gmlake_stats_json`). Owned by gmlake: never destroy it. NULL on
/// failure (see `gmlake_last_error`).
#[unsafe(no_mangle)]
pub extern "C" fn gmlake_torch_allocator(device: i32) -> *const gmlake_allocator {
    let mut out: *const gmlake_allocator = std::ptr::null();
    crate::error::guard("gmlake_torch_allocator", || {
        out = device_allocator(device)?;
        Ok(())
    });
    out
}

/// Runs `f` on the process-wide allocator of CUDA device `device` (created if needed), for the
/// Python module, which shares these allocators with PyTorch's entry points.
///
/// # Errors
/// No driver or device, a bad configuration, or the error `f` returns, as a message.
pub fn with_torch_allocator<R>(
    device: i32,
    f: impl FnOnce(&mut gmlake_core::Allocator<AnyDevice>) -> gmlake_core::Result<R>,
) -> Result<R, String> {
    let a = device_allocator(device).map_err(|Failure(_, m)| m)?;
    a.inner.with(f).map_err(|e| e.to_string())
}

/// Devices whose process-wide allocator exists.
pub fn torch_devices() -> Vec<i32> {
    DEVICES
        .lock()
        .map(|d| {
            d.iter()
                .enumerate()
                .filter(|(_, a)| a.is_some())
                .map(|(i, _)| i as i32)
                .collect()
        })
        .unwrap_or_default()
}

/// Sets the configuration of the process-wide allocators (see [`gmlake_torch_configure`]).
///
/// # Errors
/// A bad configuration, or allocators that already exist.
pub fn configure_torch(config: Option<&str>) -> Result<(), String> {
    if DEVICES
        .lock()
        .map(|d| d.iter().any(Option::is_some))
        .unwrap_or(true)
    {
        return Err("allocators already exist; configure before the first allocation".into());
    }
    if let Some(t) = config {
        Config::parse(t).map_err(|e| e.to_string())?;
    }
    if let Ok(mut c) = CONFIG.lock() {
        *c = config.map(str::to_string);
    }
    Ok(())
}
