//! Memory another process shares (CUDA IPC): its physical handles, exported there as POSIX file
//! descriptors ([`gmlake_core::Allocator::share`] on a [`CudaVmm`], or PyTorch's expandable
//! segments), taken from that process with `pidfd_getfd`, imported, and mapped back to back into
//! a range of this process.

use crate::{CudaError, CudaVmm};
use gmlake_core::{Device, PhysHandle, SharedPiece};
use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};

/// Another process's memory, mapped here: readable and writable by this process's device until
/// dropped, when it is unmapped and its handles and range are given back (the memory itself lives
/// on while the exporting process holds it).
///
/// Thread-safety: `Send`; no shared state.
pub struct ImportedMemory {
    dev: CudaVmm,
    va: u64,
    len: u64,
    handles: Vec<PhysHandle>,
    mapped: u64,
}

impl std::fmt::Debug for ImportedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedMemory")
            .field("address", &self.va)
            .field("size", &self.len)
            .field("handles", &self.handles.len())
            .finish()
    }
}

fn os_error(call: &'static str, detail: String) -> impl FnOnce(rustix::io::Errno) -> CudaError {
    move |e| CudaError::Driver {
        call,
        result: e.to_string(),
        code: e.raw_os_error() as i64,
        detail,
    }
}

fn device_error(e: gmlake_core::DeviceError) -> CudaError {
    CudaError::Driver {
        call: e.call.name(),
        result: format!("{:?}", e.kind),
        code: e.code,
        detail: e.message,
    }
}

impl ImportedMemory {
    /// Maps on device `ordinal` the `pieces` that process `pid` exported, back to back in this
    /// order, each `piece.size` bytes from `piece.offset` into its handle. O(pieces) driver calls.
    ///
    /// # Errors
    /// [`CudaError::Driver`] naming the call that failed: `pidfd_open` or `pidfd_getfd` (the
    /// process is gone, the descriptor was closed, or this process may not take descriptors from
    /// it: same user and ptrace rules as for `ptrace`), or a driver call (no pieces, a piece not a
    /// whole handle, which the driver cannot map). Whatever was done is undone.
    pub fn open(
        ordinal: i32,
        pid: i32,
        pieces: &[SharedPiece],
    ) -> Result<ImportedMemory, CudaError> {
        let len: u64 = pieces.iter().map(|p| p.size).sum();
        let mut dev = CudaVmm::new(ordinal)?;
        let pid_of = Pid::from_raw(pid).ok_or_else(|| CudaError::Driver {
            call: "pidfd_open",
            result: "EINVAL".into(),
            code: 22,
            detail: format!("process id {pid}"),
        })?;
        let pidfd = pidfd_open(pid_of, PidfdFlags::empty())
            .map_err(os_error("pidfd_open", format!("process {pid}")))?;
        let va = dev
            .reserve_range(len.max(1).next_multiple_of(dev.granularity()))
            .map_err(device_error)?;
        let mut this = ImportedMemory {
            dev,
            va,
            len,
            handles: Vec::new(),
            mapped: 0,
        };
        for p in pieces {
            let fd = pidfd_getfd(&pidfd, p.os_handle as i32, PidfdGetfdFlags::empty()).map_err(
                os_error(
                    "pidfd_getfd",
                    format!("descriptor {} of process {pid}", p.os_handle),
                ),
            )?;
            let h = this
                .dev
                .import_handle(&fd, p.handle_size)
                .map_err(device_error)?;
            this.handles.push(h);
            let at = this.va + this.mapped;
            this.dev
                .map(at, p.size, h, p.offset)
                .map_err(device_error)?;
            this.mapped += p.size;
            this.dev.set_access(at, p.size).map_err(device_error)?;
        }
        Ok(this)
    }

    /// The first byte of the shared memory in this process.
    pub fn address(&self) -> u64 {
        self.va
    }

    /// Its size in bytes (the pieces' sizes summed).
    pub fn size(&self) -> u64 {
        self.len
    }
}

impl Drop for ImportedMemory {
    fn drop(&mut self) {
        // The device's work on the memory must be done before it goes (as for any unmap).
        let _ = self.dev.synchronize_device();
        if self.mapped > 0 {
            let _ = self.dev.unmap(self.va, self.mapped);
        }
        for h in self.handles.drain(..) {
            let _ = self.dev.release_handle(h);
        }
        let size = self.len.max(1).next_multiple_of(self.dev.granularity());
        let _ = self.dev.free_range(self.va, size);
    }
}
