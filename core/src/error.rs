//! Errors the allocator returns.

use crate::device::DeviceError;
use core::fmt;

/// Why an allocator call failed. No failure leaves the allocator inconsistent: whatever a failed
/// call had done is undone before it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A request of zero bytes.
    ZeroSize,
    /// A request larger than any device could hold (`size` bytes, above `max` bytes).
    TooLarge {
        /// The requested size in bytes.
        size: u64,
        /// The largest size accepted, in bytes.
        max: u64,
    },
    /// The address is not a live allocation of this allocator: never allocated, already freed
    /// (double free), or not the start of an allocation.
    NotAllocated {
        /// The address passed in.
        addr: u64,
    },
    /// Out of memory: even after releasing cached memory the request did not fit.
    OutOfMemory(OomInfo),
    /// A device call failed in a way the allocator could not work around (anything but running
    /// out of memory).
    Device(DeviceError),
    /// A configuration string or value was refused.
    Config(crate::config::ConfigError),
    /// An argument was out of range (for example a memory fraction outside `0..=1`).
    InvalidArgument(&'static str),
    /// The allocator still has live allocations and cannot be torn down.
    LiveAllocations {
        /// How many allocations are live.
        count: u64,
    },
}

/// The figures an out-of-memory error reports, all in bytes (PyTorch's message gives the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomInfo {
    /// What the caller asked for.
    pub requested: u64,
    /// Physical memory this allocator holds.
    pub reserved: u64,
    /// Memory handed out to live allocations (rounded sizes).
    pub allocated: u64,
    /// The device's total memory.
    pub device_total: u64,
    /// The device's free memory as the driver reports it, if the backend can tell.
    pub device_free: Option<u64>,
    /// The allocator's own limit (memory fraction or capacity), if one is set.
    pub limit: Option<u64>,
}

impl fmt::Display for OomInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CUDA out of memory. Tried to allocate {}. Device has {} total",
            Bytes(self.requested),
            Bytes(self.device_total)
        )?;
        if let Some(free) = self.device_free {
            write!(f, ", {} free", Bytes(free))?;
        }
        write!(
            f,
            ". gmlake has {} reserved, of which {} allocated and {} reserved but unallocated",
            Bytes(self.reserved),
            Bytes(self.allocated),
            Bytes(self.reserved.saturating_sub(self.allocated))
        )?;
        if let Some(limit) = self.limit {
            write!(f, "; its limit is {}", Bytes(limit))?;
        }
        f.write_str(".")
    }
}

/// Formats a byte count the way PyTorch's messages do (`1.50 GiB`).
#[derive(Clone, Copy, Debug)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} bytes", self.0)
        } else {
            write!(f, "{:.2} {}", value, UNITS[unit])
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroSize => f.write_str("a request of zero bytes"),
            Error::TooLarge { size, max } => {
                write!(
                    f,
                    "a request of {size} bytes is larger than the {max} bytes any device can hold"
                )
            }
            Error::NotAllocated { addr } => write!(
                f,
                "address {addr:#x} is not a live allocation of this allocator \
                 (never allocated, already freed: a double free, or not the start of an allocation)"
            ),
            Error::OutOfMemory(info) => info.fmt(f),
            Error::Device(e) => write!(f, "device call failed: {e}"),
            Error::Config(e) => e.fmt(f),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::LiveAllocations { count } => {
                write!(f, "{count} allocations are still live")
            }
        }
    }
}

impl From<DeviceError> for Error {
    fn from(e: DeviceError) -> Self {
        Error::Device(e)
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Self {
        Error::Config(e)
    }
}

impl core::error::Error for Error {}

/// The result of an allocator call.
pub type Result<T, E = Error> = core::result::Result<T, E>;
