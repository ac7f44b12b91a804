//! PyTorch's caching allocator, as books: the rules of PyTorch 2.11's
//! `c10/cuda/CUDACachingAllocator.cpp` (`DeviceCachingAllocator::malloc`, `get_free_block`,
//! `alloc_block`, `should_split`, `free_block`, `try_merge_blocks`, `release_cached_blocks`, and
//! for expandable segments `find_expandable_block`, `map_block`, `try_allocate_expandable_block`,
//! `unmap_block`), with the names of that file, one function each.

use std::collections::BTreeMap;

/// Sizes are rounded up to a multiple of this (`kMinBlockSize`).
const MIN_BLOCK: u64 = 512;
/// The largest request of the small pool (`kSmallSize`).
const SMALL_SIZE: u64 = 1 << 20;
/// Small-pool segments, and expandable segments' small-pool pages (`kSmallBuffer`).
const SMALL_BUFFER: u64 = 2 << 20;
/// Requests below this get a `LARGE_BUFFER` segment (`kMinLargeAlloc`).
const MIN_LARGE_ALLOC: u64 = 10 << 20;
/// Segments for requests of 1-10 MiB, and expandable segments' large-pool pages (`kLargeBuffer`).
const LARGE_BUFFER: u64 = 20 << 20;
/// Larger segments are rounded to this (`kRoundLarge`).
const ROUND_LARGE: u64 = 2 << 20;

type Id = usize;

#[derive(Clone, Debug)]
struct Block {
    ptr: u64,
    size: u64,
    stream: u64,
    small: bool,
    allocated: bool,
    mapped: bool,
    prev: Option<Id>,
    next: Option<Id>,
    /// The expandable segment it lies in, if any (its page size).
    page: Option<u64>,
}

/// The free (`blocks`) and unmapped blocks of one pool, ordered as PyTorch orders them:
/// (stream, size, address) and (stream, address).
#[derive(Default)]
struct Pool {
    blocks: BTreeMap<(u64, u64, u64), Id>,
    unmapped: BTreeMap<(u64, u64), Id>,
}

/// One device's caching allocator, native or with expandable segments, on a device of
/// `capacity` bytes. Blocks are named by ids that [`CachingModel::malloc`] returns.
pub struct CachingModel {
    expandable: bool,
    capacity: u64,
    blocks: Vec<Option<Block>>,
    spare: Vec<Id>,
    pools: [Pool; 2],
    /// `total_allocated_memory`: bytes of segments, or of mapped pages.
    reserved: u64,
    next_va: u64,
    /// Live `cudaMalloc` segments, start to end.
    segments: BTreeMap<u64, u64>,
    /// Where the driver put the segment the next `cudaMalloc` of this size makes, if known.
    hint: Option<(u64, u64)>,
}

impl CachingModel {
    /// An empty allocator (`expandable`: `expandable_segments:True`) on `capacity` bytes.
    pub fn new(expandable: bool, capacity: u64) -> CachingModel {
        CachingModel {
            expandable,
            capacity,
            blocks: Vec::new(),
            spare: Vec::new(),
            pools: [Pool::default(), Pool::default()],
            reserved: 0,
            // Above any device address (48 bits), so that hinted addresses never collide; every
            // range starts at a multiple of both page sizes, as pages count from a segment's start.
            next_va: (1u64 << 56).next_multiple_of(LARGE_BUFFER),
            segments: BTreeMap::new(),
            hint: None,
        }
    }

    /// Says that the next `cudaMalloc` of `size` bytes returns `addr`, as a recorded trace tells
    /// (its `segment_alloc` event). The driver's choice of addresses decides ties in best fit
    /// (blocks of equal size are taken lowest address first), so a replay that follows the
    /// recorded addresses makes PyTorch's choices. Ignored if the range overlaps a live segment of
    /// the model, or for another size. The hint lasts until the next allocation.
    pub fn hint_segment_address(&mut self, addr: u64, size: u64) {
        self.hint = Some((addr, size));
    }

    /// Bytes held from the device now.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Serves `orig_size` bytes on `stream` (`DeviceCachingAllocator::malloc`): the best fitting
    /// free block of the pool and stream, else new memory, else the same after releasing every
    /// cached segment (or page); split if worth it. `None` when even that does not fit.
    /// O(log blocks) but for the release.
    pub fn malloc(&mut self, orig_size: u64, stream: u64) -> Option<usize> {
        let r = self.malloc_inner(orig_size, stream);
        self.hint = None;
        r
    }

    fn malloc_inner(&mut self, orig_size: u64, stream: u64) -> Option<usize> {
        let size = round_size(orig_size);
        let small = size <= SMALL_SIZE;
        let found = self.get_free_block(size, stream, small).or_else(|| {
            self.alloc_block(size, stream, small).or_else(|| {
                self.release_cached_blocks();
                self.alloc_block(size, stream, small)
            })
        })?;
        let id = if self.should_split(found, size) {
            self.split(found, size)
        } else {
            found
        };
        self.b(id).allocated = true;
        Some(id)
    }

    /// Returns a block to its pool, merged with its free neighbours (`free_block`). O(log blocks).
    pub fn free(&mut self, id: usize) {
        self.b(id).allocated = false;
        for n in [self.b(id).prev, self.b(id).next] {
            self.try_merge_blocks(id, n);
        }
        self.insert_free(id);
    }

    /// The size of the segment a request of `size` bytes (rounded) gets (`get_allocation_size`):
    /// 2 MiB for the small pool, 20 MiB up to 10 MiB, else the request rounded to 2 MiB.
    fn get_allocation_size(size: u64) -> u64 {
        if size <= SMALL_SIZE {
            SMALL_BUFFER
        } else if size < MIN_LARGE_ALLOC {
            LARGE_BUFFER
        } else {
            size.div_ceil(ROUND_LARGE) * ROUND_LARGE
        }
    }

    /// The smallest free block of at least `size` bytes of the pool on `stream`; in an
    /// expandable segment, among equal candidates the one with the least unmapped space after it.
    fn get_free_block(&mut self, size: u64, stream: u64, small: bool) -> Option<Id> {
        let pool = &self.pools[small as usize];
        let mut it = pool
            .blocks
            .range((stream, size, 0)..(stream, u64::MAX, u64::MAX))
            .map(|(_, &id)| id);
        let mut best = it.next()?;
        if self.expandable {
            for next in it {
                if self.blk(best).page.is_none()
                    || self.expandable_size(next) >= self.expandable_size(best)
                {
                    break;
                }
                best = next;
            }
        }
        self.remove_free(best);
        Some(best)
    }

    fn expandable_size(&self, id: Id) -> u64 {
        let b = self.blk(id);
        b.size
            + b.next
                .map(|n| self.blk(n))
                .filter(|n| !n.mapped)
                .map_or(0, |n| n.size)
    }

    /// New memory: a `cudaMalloc` segment of `get_allocation_size(size)`, or pages mapped into
    /// the pool's expandable segment; `None` past the capacity.
    fn alloc_block(&mut self, size: u64, stream: u64, small: bool) -> Option<Id> {
        if self.expandable {
            return self.try_allocate_expandable_block(size, stream, small);
        }
        let seg = Self::get_allocation_size(size);
        if self.reserved + seg > self.capacity {
            return None;
        }
        self.reserved += seg;
        let ptr = match self.hint.take() {
            Some((addr, len)) if len == seg && !self.overlaps(addr, seg) => addr,
            _ => self.take_va(seg),
        };
        self.segments.insert(ptr, ptr + seg);
        Some(self.new_block(Block {
            ptr,
            size: seg,
            stream,
            small,
            allocated: false,
            mapped: true,
            prev: None,
            next: None,
            page: None,
        }))
    }

    /// `should_split`: small pool and expandable segments at 512 bytes left over, the large pool
    /// above 1 MiB left over.
    fn should_split(&self, id: Id, size: u64) -> bool {
        let b = self.blk(id);
        let remaining = b.size - size;
        if b.small || self.expandable {
            remaining >= MIN_BLOCK
        } else {
            remaining > SMALL_SIZE
        }
    }

    /// Cuts `size` bytes off the front of `id`; the rest goes back to the pool. Returns the front.
    fn split(&mut self, id: Id, size: u64) -> Id {
        let b = self.blk(id).clone();
        let front = self.link_before(id, b.ptr, size);
        let r = self.b(id);
        r.ptr += size;
        r.size -= size;
        self.insert_free(id);
        front
    }

    /// A new block of `size` bytes at `ptr`, like `id`, linked just before it. O(1).
    fn link_before(&mut self, id: Id, ptr: u64, size: u64) -> Id {
        let b = self.blk(id).clone();
        let new = self.new_block(Block {
            ptr,
            size,
            next: Some(id),
            ..b
        });
        if let Some(p) = b.prev {
            self.b(p).next = Some(new);
        }
        self.b(id).prev = Some(new);
        new
    }

    /// A new block of `size` bytes at `ptr`, like `id` (but mapped as `mapped`), linked just
    /// after it. O(1).
    fn link_after(&mut self, id: Id, ptr: u64, size: u64, mapped: bool) -> Id {
        let b = self.blk(id).clone();
        let new = self.new_block(Block {
            ptr,
            size,
            prev: Some(id),
            mapped,
            ..b
        });
        if let Some(n) = b.next {
            self.b(n).prev = Some(new);
        }
        self.b(id).next = Some(new);
        new
    }

    /// Merges `src` into `dst` if it is free and mapped alike (`try_merge_blocks`).
    fn try_merge_blocks(&mut self, dst: Id, src: Option<Id>) {
        let Some(src) = src else { return };
        let (s, d) = (self.blk(src).clone(), self.blk(dst).clone());
        if s.allocated || s.mapped != d.mapped {
            return;
        }
        if s.mapped {
            self.remove_free(src);
        } else {
            self.pools[s.small as usize]
                .unmapped
                .remove(&(s.stream, s.ptr));
        }
        if d.prev == Some(src) {
            let b = self.b(dst);
            b.ptr = s.ptr;
            b.prev = s.prev;
            if let Some(p) = s.prev {
                self.b(p).next = Some(dst);
            }
        } else {
            self.b(dst).next = s.next;
            if let Some(n) = s.next {
                self.b(n).prev = Some(dst);
            }
        }
        self.b(dst).size += s.size;
        self.drop_block(src);
    }

    /// After a failed allocation: every free unsplit segment goes back to the device; in
    /// expandable segments, every wholly free page (`release_cached_blocks`).
    fn release_cached_blocks(&mut self) {
        for small in [false, true] {
            let free: Vec<Id> = self.pools[small as usize]
                .blocks
                .values()
                .copied()
                .collect();
            for id in free {
                let b = self.blk(id);
                let (ptr, size) = (b.ptr, b.size);
                if b.page.is_some() {
                    self.unmap_block(id);
                } else if b.prev.is_none() && b.next.is_none() {
                    self.reserved -= size;
                    self.segments.remove(&ptr);
                    self.remove_free(id);
                    self.drop_block(id);
                }
            }
        }
    }

    /// Unmaps the whole pages inside the free block `id` (`unmap_block`); the bytes around them
    /// stay free blocks.
    fn unmap_block(&mut self, id: Id) {
        let b = self.blk(id).clone();
        let page = b.page.expect("an expandable block");
        let (begin, end) = (b.ptr.next_multiple_of(page), (b.ptr + b.size) / page * page);
        if begin >= end {
            return;
        }
        self.remove_free(id);
        if begin > b.ptr {
            let before = self.link_before(id, b.ptr, begin - b.ptr);
            self.insert_free(before);
        }
        if end < b.ptr + b.size {
            let after = self.link_after(id, end, b.ptr + b.size - end, true);
            self.insert_free(after);
        }
        let blk = self.b(id);
        blk.ptr = begin;
        blk.size = end - begin;
        blk.mapped = false;
        self.reserved -= end - begin;
        for n in [self.blk(id).prev, self.blk(id).next] {
            self.try_merge_blocks(id, n);
        }
        let blk = self.blk(id);
        if blk.prev.is_none() && blk.next.is_none() {
            // The whole segment is unmapped: its address space goes too.
            self.drop_block(id);
        } else {
            let key = (blk.stream, blk.ptr);
            self.pools[blk.small as usize].unmapped.insert(key, id);
        }
    }

    /// The lowest address of the pool's expandable segments on `stream` where free and unmapped
    /// blocks together hold `size` bytes, or a new segment (`find_expandable_block`).
    fn find_expandable_block(&mut self, size: u64, stream: u64, small: bool) -> Id {
        let pool = &self.pools[small as usize];
        let unmapped: Vec<Id> = pool
            .unmapped
            .range((stream, 0)..(stream, u64::MAX))
            .map(|(_, &id)| id)
            .collect();
        for c in unmapped {
            let start = match self.blk(c).prev {
                Some(p) if !self.blk(p).allocated => p,
                _ => c,
            };
            let (mut bytes, mut at) = (0, Some(start));
            while let Some(b) = at.filter(|&b| bytes < size && !self.blk(b).allocated) {
                bytes += self.blk(b).size;
                at = self.blk(b).next;
            }
            if bytes >= size {
                return start;
            }
        }
        // A segment whose address space holds 1 1/8 of the device's memory, all unmapped.
        let page = if small { SMALL_BUFFER } else { LARGE_BUFFER };
        let space = (self.capacity + self.capacity / 8).div_ceil(page) * page;
        let ptr = self.take_va(space);
        let id = self.new_block(Block {
            ptr,
            size: space,
            stream,
            small,
            allocated: false,
            mapped: false,
            prev: None,
            next: None,
            page: Some(page),
        });
        self.pools[small as usize]
            .unmapped
            .insert((stream, ptr), id);
        id
    }

    /// Maps the pages holding the first `size` bytes of the unmapped block `id`, which then
    /// merges with a free block before it (`map_block`); false past the capacity.
    fn map_block(&mut self, id: Id, size: u64) -> bool {
        let b = self.blk(id).clone();
        let page = b.page.expect("an expandable block");
        let mapped = (size.div_ceil(page) * page).min(b.size);
        if self.reserved + mapped > self.capacity {
            return false;
        }
        self.pools[b.small as usize]
            .unmapped
            .remove(&(b.stream, b.ptr));
        self.b(id).mapped = true;
        if mapped < b.size {
            let rest = self.link_after(id, b.ptr + mapped, b.size - mapped, false);
            self.b(id).size = mapped;
            self.pools[b.small as usize]
                .unmapped
                .insert((b.stream, b.ptr + mapped), rest);
        }
        self.reserved += mapped;
        let (prev, next) = (self.blk(id).prev, self.blk(id).next);
        self.try_merge_blocks(id, prev);
        self.try_merge_blocks(id, next);
        true
    }

    /// Maps what a request of `size` bytes lacks at the lowest address where it fits
    /// (`try_allocate_expandable_block`).
    fn try_allocate_expandable_block(&mut self, size: u64, stream: u64, small: bool) -> Option<Id> {
        let mut candidate = self.find_expandable_block(size, stream, small);
        if !self.blk(candidate).mapped {
            let first = self.blk(candidate).size.min(size);
            if !self.map_block(candidate, first) {
                return None;
            }
        } else {
            self.remove_free(candidate);
        }
        while self.blk(candidate).size < size {
            let remaining = size - self.blk(candidate).size;
            let next = self.blk(candidate).next.expect("unmapped space follows");
            if !self.map_block(next, remaining.min(self.blk(next).size)) {
                // What was mapped stays, free, as in PyTorch.
                self.insert_free(candidate);
                return None;
            }
            candidate = next;
        }
        Some(candidate)
    }

    /// Whether `[addr, addr + len)` overlaps a live segment. O(log segments).
    fn overlaps(&self, addr: u64, len: u64) -> bool {
        let before = self.segments.range(..addr + len).next_back();
        before.is_some_and(|(_, &end)| end > addr)
    }

    fn take_va(&mut self, size: u64) -> u64 {
        let va = self.next_va;
        self.next_va += size.next_multiple_of(LARGE_BUFFER) + LARGE_BUFFER;
        va
    }

    fn new_block(&mut self, b: Block) -> Id {
        match self.spare.pop() {
            Some(id) => {
                self.blocks[id] = Some(b);
                id
            }
            None => {
                self.blocks.push(Some(b));
                self.blocks.len() - 1
            }
        }
    }

    fn drop_block(&mut self, id: Id) {
        self.blocks[id] = None;
        self.spare.push(id);
    }

    fn insert_free(&mut self, id: Id) {
        let b = self.blk(id);
        let key = (b.stream, b.size, b.ptr);
        self.pools[b.small as usize].blocks.insert(key, id);
    }

    fn remove_free(&mut self, id: Id) {
        let b = self.blk(id);
        let key = (b.stream, b.size, b.ptr);
        self.pools[b.small as usize].blocks.remove(&key);
    }

    fn blk(&self, id: Id) -> &Block {
        self.blocks[id].as_ref().expect("a live block")
    }

    fn b(&mut self, id: Id) -> &mut Block {
        self.blocks[id].as_mut().expect("a live block")
    }
}

/// `round_size` without `roundup_power2_divisions`: a multiple of 512, at least 512.
fn round_size(size: u64) -> u64 {
    size.max(1).div_ceil(MIN_BLOCK) * MIN_BLOCK
}
