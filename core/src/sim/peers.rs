//! Simulated devices that are peers of one another (GPUs of one node joined by NVLink): each can
//! create handles in the others' memory ([`crate::Device::create_peer_handle`]), and the memory of
//! every device counts what all of them hold there, so that a handle one device borrows is room
//! the owner no longer has.
//!
//! The devices share a [`Fabric`]: per device its capacity and the bytes held in its memory, by
//! whoever created them. Each device still keeps every handle it created, local or borrowed, in
//! its own ledger (which checks the mappings); the fabric only decides whether there is room.
//!
//! Thread-safety: the fabric sits behind a spin lock held for one counter update, so the devices
//! of a fabric may be driven from different threads, as the allocators of several GPUs are.

use super::SimulatedDevice;
use crate::device::{DeviceError, DeviceErrorKind, DeviceResult, DriverCall, PhysHandle};
use alloc::sync::Arc;
use alloc::vec::Vec;

/// The memory of a set of peer devices: per device, its capacity and the bytes held in it.
#[derive(Debug)]
pub struct Fabric {
    books: spin::Mutex<Vec<(u64, u64)>>,
}

impl Fabric {
    /// Takes `size` bytes of device `dev`'s memory if it has room. O(1).
    fn take(&self, dev: u32, size: u64) -> DeviceResult<()> {
        let mut books = self.books.lock();
        let Some((cap, used)) = books.get_mut(dev as usize) else {
            return Err(DeviceError::new(
                DriverCall::CreateHandle,
                DeviceErrorKind::NotSupported,
                0,
                alloc::format!("no device {dev} in this fabric"),
            ));
        };
        if used.saturating_add(size) > *cap {
            return Err(DeviceError::new(
                DriverCall::CreateHandle,
                DeviceErrorKind::OutOfMemory,
                2,
                alloc::format!(
                    "{size} bytes requested on device {dev}, {used} of {cap} bytes in use"
                ),
            ));
        }
        *used += size;
        Ok(())
    }

    /// Gives back `size` bytes of device `dev`'s memory. O(1).
    fn give(&self, dev: u32, size: u64) {
        if let Some((_, used)) = self.books.lock().get_mut(dev as usize) {
            *used = used.saturating_sub(size);
        }
    }

    /// Bytes held in device `dev`'s memory, by any device.
    pub fn used(&self, dev: u32) -> u64 {
        self.books.lock().get(dev as usize).map_or(0, |b| b.1)
    }

    /// Device `dev`'s capacity in bytes (0 for an unknown device).
    pub fn capacity(&self, dev: u32) -> u64 {
        self.books.lock().get(dev as usize).map_or(0, |b| b.0)
    }
}

/// A simulated device's place in a fabric: its own ordinal, the fabric, and where each handle it
/// holds lives (only handles in a peer's memory are listed).
#[derive(Debug)]
pub(super) struct Membership {
    pub id: u32,
    pub fabric: Arc<Fabric>,
    pub borrowed: hashbrown::HashMap<u64, (u32, u64)>,
}

impl SimulatedDevice {
    /// Devices of the given capacities (bytes), 2 MiB granularity, the H200 cost table, all peers
    /// of one another: device `i` is `result[i]`, and its [`crate::Device::peers`] are the others
    /// in ordinal order.
    pub fn peers_of(capacities: &[u64]) -> Vec<SimulatedDevice> {
        let fabric = Arc::new(Fabric {
            books: spin::Mutex::new(capacities.iter().map(|&c| (c, 0)).collect()),
        });
        (0..capacities.len() as u32)
            .map(|id| {
                let mut d = SimulatedDevice::new(capacities[id as usize]);
                // The fabric decides whether there is room; the ledger only checks mappings.
                d.ledger.set_capacity(None);
                d.member = Some(Membership {
                    id,
                    fabric: fabric.clone(),
                    borrowed: hashbrown::HashMap::new(),
                });
                d
            })
            .collect()
    }

    /// The fabric this device belongs to, if any (for tests that look at a peer's memory).
    pub fn fabric(&self) -> Option<&Arc<Fabric>> {
        self.member.as_ref().map(|m| &m.fabric)
    }

    /// Takes room for a handle of `size` bytes in `location`'s memory (`None`: this device's),
    /// where the device belongs to a fabric; else the ledger's capacity applies.
    pub(super) fn take_room(&mut self, location: Option<u32>, size: u64) -> DeviceResult<()> {
        match &self.member {
            Some(m) => m.fabric.take(location.unwrap_or(m.id), size),
            None if location.is_some() => Err(DeviceError::new(
                DriverCall::CreateHandle,
                DeviceErrorKind::NotSupported,
                0,
                "this simulated device has no peers",
            )),
            None => Ok(()),
        }
    }

    /// Books handle `id` of `size` bytes as living in `location`'s memory.
    pub(super) fn note_handle(&mut self, id: u64, location: Option<u32>, size: u64) {
        if let (Some(m), Some(p)) = (&mut self.member, location) {
            m.borrowed.insert(id, (p, size));
        }
    }

    /// Gives back the room of released handle `id` of `size` bytes to whichever memory held it.
    pub(super) fn give_room(&mut self, id: u64, size: u64) {
        if let Some(m) = &mut self.member {
            match m.borrowed.remove(&id) {
                Some((p, s)) => m.fabric.give(p, s),
                None => m.fabric.give(m.id, size),
            }
        }
    }

    /// The other devices of the fabric, in ordinal order.
    pub(super) fn peer_ids(&self) -> Vec<u32> {
        match &self.member {
            Some(m) => {
                let n = m.fabric.books.lock().len() as u32;
                (0..n).filter(|&p| p != m.id).collect()
            }
            None => Vec::new(),
        }
    }

    /// Creates a handle in `location`'s memory (`None`: this device's).
    pub(super) fn create_in(
        &mut self,
        location: Option<u32>,
        size: u64,
    ) -> DeviceResult<PhysHandle> {
        self.enter(DriverCall::CreateHandle)?;
        self.charge(DriverCall::CreateHandle, self.costs.create_handle.at(size));
        self.ledger.check_create(size)?;
        self.take_room(location, size)?;
        let id = self.next_handle;
        self.next_handle += 1;
        self.ledger.add_handle(id, size);
        self.note_handle(id, location, size);
        Ok(PhysHandle(id))
    }
}
