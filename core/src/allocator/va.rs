//! Virtual address space: reserved from the device in large arenas, handed out in
//! granule-multiple ranges to segments and stitched blocks.
//!
//! `cuMemAddressReserve` costs 17-25 us on the H200 whatever the size (`docs/benchmarks.md`, "Per-call
//! driver costs measured by gmlake"), as much as creating a physical handle; reserving an
//! arena once and sub-allocating from it takes that cost off every growth and every stitch
//! (PyTorch's expandable segments likewise reserve one large range up front). Arenas go back to
//! the device when wholly free, on `empty_cache`.

use super::Allocator;
use crate::device::{Device, DeviceResult, DriverCall};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// Free ranges never span two arenas, since mappings may not cross reservations.
#[derive(Debug, Default)]
pub(crate) struct VaSpace {
    /// Reserved arenas: start -> size.
    arenas: BTreeMap<u64, u64>,
    /// Free ranges: start -> size.
    free_by_addr: BTreeMap<u64, u64>,
    /// Free ranges for best fit: (size, start).
    free_by_size: BTreeSet<(u64, u64)>,
}

impl VaSpace {
    fn arena_of(&self, addr: u64) -> Option<(u64, u64)> {
        self.arenas
            .range(..=addr)
            .next_back()
            .map(|(&a, &s)| (a, s))
    }

    fn insert_free(&mut self, addr: u64, size: u64) {
        self.free_by_addr.insert(addr, size);
        self.free_by_size.insert((size, addr));
    }

    fn remove_free(&mut self, addr: u64, size: u64) {
        self.free_by_addr.remove(&addr);
        self.free_by_size.remove(&(size, addr));
    }

    /// Best fit from the free ranges.
    fn take(&mut self, size: u64) -> Option<u64> {
        let &(fsize, addr) = self.free_by_size.range((size, 0)..).next()?;
        self.remove_free(addr, fsize);
        if fsize > size {
            self.insert_free(addr + size, fsize - size);
        }
        Some(addr)
    }

    /// Takes exactly `[addr, addr + size)` if it is free.
    fn take_exact(&mut self, addr: u64, size: u64) -> bool {
        let Some((&start, &len)) = self.free_by_addr.range(..=addr).next_back() else {
            return false;
        };
        if start + len < addr + size {
            return false;
        }
        self.remove_free(start, len);
        if addr > start {
            self.insert_free(start, addr - start);
        }
        if start + len > addr + size {
            self.insert_free(addr + size, start + len - addr - size);
        }
        true
    }

    /// Whether `[addr, addr + size)` is free.
    pub(crate) fn is_free(&self, addr: u64, size: u64) -> bool {
        self.free_by_addr
            .range(..=addr)
            .next_back()
            .is_some_and(|(&s, &l)| s + l >= addr + size)
    }

    /// Returns a range, merging it with free neighbours of the same arena.
    fn give(&mut self, addr: u64, size: u64) {
        let Some((arena, arena_size)) = self.arena_of(addr) else {
            return;
        };
        let (mut start, mut len) = (addr, size);
        if let Some((&p, &psize)) = self.free_by_addr.range(arena..addr).next_back() {
            if p + psize == addr {
                self.remove_free(p, psize);
                start = p;
                len += psize;
            }
        }
        let end = addr + size;
        if end < arena + arena_size {
            if let Some(&nsize) = self.free_by_addr.get(&end) {
                self.remove_free(end, nsize);
                len += nsize;
            }
        }
        self.insert_free(start, len);
    }

    /// Arenas that are wholly free.
    fn idle_arenas(&self) -> Vec<(u64, u64)> {
        self.arenas
            .iter()
            .filter(|(a, s)| self.free_by_addr.get(a) == Some(s))
            .map(|(&a, &s)| (a, s))
            .collect()
    }

    pub(crate) fn arena_count(&self) -> usize {
        self.arenas.len()
    }
}

impl<D: Device> Allocator<D> {
    /// A free virtual range of `size` bytes (a multiple of the granularity), reserving a new arena
    /// of at least `va_arena_size` bytes if none is free.
    pub(super) fn va_alloc(&mut self, size: u64) -> DeviceResult<u64> {
        if let Some(addr) = self.va.take(size) {
            return Ok(addr);
        }
        let arena_size = size.max(self.cfg.va_arena_size.div_ceil(self.gran) * self.gran);
        let arena = self.call(DriverCall::ReserveRange, |d| d.reserve_range(arena_size))?;
        self.va.arenas.insert(arena, arena_size);
        self.va.insert_free(arena, arena_size);
        Ok(self.va.take(size).unwrap_or(arena))
    }

    /// Takes `[addr, addr + size)` if it is free, for growing a segment in place.
    pub(super) fn va_take_exact(&mut self, addr: u64, size: u64) -> bool {
        self.va.take_exact(addr, size)
    }

    /// Returns a range with nothing mapped in it.
    pub(super) fn va_free(&mut self, addr: u64, size: u64) {
        self.va.give(addr, size);
    }

    /// Frees arenas with nothing allocated in them; one the device refuses stays for next time.
    pub(super) fn release_idle_arenas(&mut self) {
        for (arena, size) in self.va.idle_arenas() {
            if self
                .call(DriverCall::FreeRange, |d| d.free_range(arena, size))
                .is_ok()
            {
                self.va.remove_free(arena, size);
                self.va.arenas.remove(&arena);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_coalesce_within_an_arena_only() {
        let mut v = VaSpace::default();
        v.arenas.insert(0, 100);
        v.insert_free(0, 100);
        v.arenas.insert(100, 50);
        v.insert_free(100, 50);
        let a = v.take(40).unwrap();
        let b = v.take(60).unwrap();
        assert_eq!((a, b), (100, 0));
        v.give(b, 60);
        v.give(a, 40);
        assert_eq!(v.idle_arenas(), alloc::vec![(0, 100), (100, 50)]);
        assert_eq!(v.free_by_addr.len(), 2);
    }
}
