//! Allocator statistics, with PyTorch's names and meaning (`c10/core/CachingDeviceAllocator.h`,
//! `DeviceStats`) plus gmlake's own figures.
//!
//! Every counter goes down again when what it counts goes away.

use crate::device::DriverCallCounts;

/// One statistic: its current value, its peak, and the sums of increases and decreases
/// (PyTorch's `Stat`). Units are those of the statistic (bytes or a count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// The value now.
    pub current: i64,
    /// The highest value since creation or the last [`Stat::reset_peak`].
    pub peak: i64,
    /// Sum of all increases.
    pub allocated: u64,
    /// Sum of all decreases.
    pub freed: u64,
}

impl Stat {
    /// Adds `amount` (negative to decrease).
    #[inline]
    pub fn update(&mut self, amount: i64) {
        self.current += amount;
        if self.current > self.peak {
            self.peak = self.current;
        }
        if amount > 0 {
            self.allocated += amount as u64;
        } else {
            self.freed += amount.unsigned_abs();
        }
    }

    /// Sets the peak to the current value.
    pub fn reset_peak(&mut self) {
        self.peak = self.current;
    }

    /// Zeroes `allocated` and `freed`.
    pub fn reset_accumulated(&mut self) {
        self.allocated = 0;
        self.freed = 0;
    }

    /// The four figures under PyTorch's names: `current`, `peak`, `allocated`, `freed`.
    pub fn fields(&self) -> [(&'static str, i64); 4] {
        [
            ("current", self.current),
            ("peak", self.peak),
            ("allocated", self.allocated as i64),
            ("freed", self.freed as i64),
        ]
    }
}

/// Which pool a statistic covers (PyTorch's `StatType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Requests of at most `Config::small_size` bytes.
    Small,
    /// All other requests.
    Large,
}

impl PoolKind {
    /// `"small_pool"` or `"large_pool"`, as in PyTorch's keys.
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Small => "small_pool",
            PoolKind::Large => "large_pool",
        }
    }
}

/// A statistic for all pools, the small pool and the large pool (PyTorch's `StatArray`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatArray {
    /// Both pools.
    pub all: Stat,
    /// The small pool only.
    pub small_pool: Stat,
    /// The large pool only.
    pub large_pool: Stat,
}

impl StatArray {
    /// Updates `all` and the pool's own statistic.
    #[inline]
    pub fn update(&mut self, pool: PoolKind, amount: i64) {
        self.all.update(amount);
        match pool {
            PoolKind::Small => self.small_pool.update(amount),
            PoolKind::Large => self.large_pool.update(amount),
        }
    }

    /// `(suffix, stat)` pairs: `all`, `small_pool`, `large_pool`.
    pub fn parts(&self) -> [(&'static str, &Stat); 3] {
        [
            ("all", &self.all),
            ("small_pool", &self.small_pool),
            ("large_pool", &self.large_pool),
        ]
    }

    fn each(&mut self, f: impl Fn(&mut Stat)) {
        f(&mut self.all);
        f(&mut self.small_pool);
        f(&mut self.large_pool);
    }
}

/// All statistics of one allocator (one device).
///
/// PyTorch's (`torch.cuda.memory_stats()`): byte statistics count rounded block sizes, except
/// `requested_bytes`, which counts what callers asked for. gmlake's own follow them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Number of live allocations.
    pub allocation: StatArray,
    /// Number of segments: primitive virtual ranges backed by this allocator's physical handles.
    pub segment: StatArray,
    /// Number of active blocks: live allocations plus freed ones still waiting for other streams.
    pub active: StatArray,
    /// Number of free blocks inside segments that are partly in use (PyTorch's `inactive_split`).
    pub inactive_split: StatArray,
    /// Bytes handed out to live allocations (rounded to 512 bytes).
    pub allocated_bytes: StatArray,
    /// Physical bytes held: the sum of the sizes of all physical handles not yet released.
    pub reserved_bytes: StatArray,
    /// Bytes of active blocks (allocations plus those awaiting other streams' work).
    pub active_bytes: StatArray,
    /// Bytes of free blocks inside segments that are partly in use.
    pub inactive_split_bytes: StatArray,
    /// Bytes callers asked for, of live allocations.
    pub requested_bytes: StatArray,
    /// Times an allocation released cached memory and retried.
    pub num_alloc_retries: u64,
    /// Allocations that failed for lack of memory.
    pub num_ooms: u64,
    /// Driver calls that obtain memory: physical handle creations and mappings.
    pub num_device_alloc: u64,
    /// Driver calls that give memory back: handle releases and unmappings.
    pub num_device_free: u64,
    /// Device-wide synchronizations the allocator performed.
    pub num_sync_all_streams: u64,
    /// Virtual bytes of live stitched blocks (gmlake).
    pub stitched_bytes: Stat,
    /// Number of live stitched blocks (gmlake).
    pub stitched_blocks: Stat,
    /// Number of live mappings made for stitched blocks (gmlake).
    pub stitch_mappings: Stat,
    /// Stitches performed: new virtual ranges mapping free chunks (gmlake).
    pub num_stitches: u64,
    /// Allocations served by reusing a cached stitched block (gmlake).
    pub num_stitch_reuses: u64,
    /// Stitched blocks destroyed by garbage collection (GMLake's StitchFree) (gmlake).
    pub num_stitch_gc: u64,
    /// Allocations served from free blocks of another stream whose work had completed (gmlake).
    pub num_cross_stream_reuses: u64,
    /// Free physical chunks cut in two so that a small allocation does not make a large chunk
    /// unstitchable (gmlake).
    pub num_chunk_splits: u64,
    /// Driver calls made by this allocator, by kind (gmlake).
    pub driver_calls: DriverCallCounts,
    /// Bytes of peer devices' memory held (borrowed), all peers together; counted in
    /// `reserved_bytes` too (gmlake, `peer_borrow`).
    pub borrowed_bytes: Stat,
    /// Bytes held of each peer's memory now, by peer ordinal (peers from [`MAX_PEERS`] on are
    /// never borrowed from) (gmlake).
    pub borrowed_by_peer: [u64; MAX_PEERS],
}

/// The most peer devices memory is borrowed from: ordinals `0..MAX_PEERS` (an NVLink domain of
/// HGX H200 boards has 8 GPUs).
pub const MAX_PEERS: usize = 16;

impl Stats {
    /// Books `delta` bytes (negative: returned) of peer `peer`'s memory as borrowed.
    pub(crate) fn borrow(&mut self, peer: u32, delta: i64) {
        self.borrowed_bytes.update(delta);
        if let Some(b) = self.borrowed_by_peer.get_mut(peer as usize) {
            *b = b.saturating_add_signed(delta);
        }
    }

    /// Bytes of peer `peer`'s memory held now (0 for an ordinal past [`MAX_PEERS`]).
    pub fn borrowed_from(&self, peer: u32) -> u64 {
        self.borrowed_by_peer
            .get(peer as usize)
            .copied()
            .unwrap_or(0)
    }

    /// `requested_bytes.all.peak / reserved_bytes.all.peak`: GMLake's utilization metric on the
    /// bytes callers asked for (1 - fragmentation). 0 before any memory was reserved.
    pub fn utilization(&self) -> f64 {
        if self.reserved_bytes.all.peak <= 0 {
            0.0
        } else {
            self.requested_bytes.all.peak as f64 / self.reserved_bytes.all.peak as f64
        }
    }

    /// The byte and count arrays with PyTorch's key names, for flattening into
    /// `name.pool.field` keys as `torch.cuda.memory_stats()` does.
    pub fn arrays(&self) -> [(&'static str, &StatArray); 9] {
        [
            ("allocation", &self.allocation),
            ("segment", &self.segment),
            ("active", &self.active),
            ("inactive_split", &self.inactive_split),
            ("allocated_bytes", &self.allocated_bytes),
            ("reserved_bytes", &self.reserved_bytes),
            ("active_bytes", &self.active_bytes),
            ("inactive_split_bytes", &self.inactive_split_bytes),
            ("requested_bytes", &self.requested_bytes),
        ]
    }

    /// gmlake's own statistics of stitched blocks and borrowed memory, by name (keys
    /// `gmlake.NAME.FIELD`).
    pub fn stitch_stats(&self) -> [(&'static str, &Stat); 4] {
        [
            ("stitched_bytes", &self.stitched_bytes),
            ("stitched_blocks", &self.stitched_blocks),
            ("stitch_mappings", &self.stitch_mappings),
            ("borrowed_bytes", &self.borrowed_bytes),
        ]
    }

    /// The event counters by key: PyTorch's, then gmlake's (under `gmlake.`).
    pub fn counters(&self) -> [(&'static str, u64); 10] {
        [
            ("num_alloc_retries", self.num_alloc_retries),
            ("num_ooms", self.num_ooms),
            ("num_device_alloc", self.num_device_alloc),
            ("num_device_free", self.num_device_free),
            ("num_sync_all_streams", self.num_sync_all_streams),
            ("gmlake.num_stitches", self.num_stitches),
            ("gmlake.num_stitch_reuses", self.num_stitch_reuses),
            ("gmlake.num_stitch_gc", self.num_stitch_gc),
            (
                "gmlake.num_cross_stream_reuses",
                self.num_cross_stream_reuses,
            ),
            ("gmlake.num_chunk_splits", self.num_chunk_splits),
        ]
    }

    /// Every [`Stat`], for resetting.
    fn each_stat(&mut self, f: impl Fn(&mut Stat)) {
        for a in self.arrays_mut() {
            a.each(&f);
        }
        for s in [
            &mut self.stitched_bytes,
            &mut self.stitched_blocks,
            &mut self.stitch_mappings,
            &mut self.borrowed_bytes,
        ] {
            f(s);
        }
    }

    /// Sets every peak to its current value (`torch.cuda.reset_peak_memory_stats`).
    pub fn reset_peaks(&mut self) {
        self.each_stat(Stat::reset_peak);
    }

    /// Zeroes the accumulated figures and event counters (`torch.cuda.reset_accumulated_memory_stats`).
    pub fn reset_accumulated(&mut self) {
        self.each_stat(Stat::reset_accumulated);
        self.num_alloc_retries = 0;
        self.num_ooms = 0;
        self.num_device_alloc = 0;
        self.num_device_free = 0;
        self.num_sync_all_streams = 0;
        self.num_stitches = 0;
        self.num_stitch_reuses = 0;
        self.num_stitch_gc = 0;
        self.num_cross_stream_reuses = 0;
        self.num_chunk_splits = 0;
        self.driver_calls = DriverCallCounts::default();
    }

    fn arrays_mut(&mut self) -> [&mut StatArray; 9] {
        [
            &mut self.allocation,
            &mut self.segment,
            &mut self.active,
            &mut self.inactive_split,
            &mut self.allocated_bytes,
            &mut self.reserved_bytes,
            &mut self.active_bytes,
            &mut self.inactive_split_bytes,
            &mut self.requested_bytes,
        ]
    }
}
