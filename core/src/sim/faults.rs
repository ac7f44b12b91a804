//! Fault injection for the simulated device: the Nth call of a kind fails, doing nothing, as a
//! driver failure would. The fault tests (`core/tests/faults.rs`, `fault_points.rs`), the fuzzer
//! and `gmlake-replay --inject-fault` use it to check that every failure is rolled back.

use crate::device::{DeviceError, DeviceErrorKind, DeviceResult, DriverCall, DriverCallCounts};
use alloc::vec::Vec;

/// Calls counted by kind, and the calls told to fail.
///
/// Thread-safety: a plain value. Each call costs O(pending faults).
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    calls: DriverCallCounts,
    pending: Vec<(DriverCall, u64)>,
}

impl FaultPlan {
    /// Makes the `nth` call (1-based, counted from the plan's creation) of kind `call` fail with
    /// `DeviceErrorKind::Other`. Several faults may be pending.
    pub fn inject(&mut self, call: DriverCall, nth: u64) {
        self.pending.push((call, nth));
    }

    /// Counts a call of kind `call`.
    ///
    /// # Errors
    /// The injected fault, if this call is one (it is then spent).
    pub fn enter(&mut self, call: DriverCall) -> DeviceResult<()> {
        self.calls.bump(call);
        let n = self.calls.get(call);
        if let Some(pos) = self.pending.iter().position(|&(c, k)| c == call && k == n) {
            self.pending.swap_remove(pos);
            return Err(DeviceError::new(
                call,
                DeviceErrorKind::Other,
                -1,
                alloc::format!("injected fault on call #{n}"),
            ));
        }
        Ok(())
    }

    /// Calls counted so far, by kind (failed ones included).
    pub fn calls(&self) -> DriverCallCounts {
        self.calls
    }
}
