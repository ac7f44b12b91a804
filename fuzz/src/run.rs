//! Runs a [`Program`] and checks the invariants after every step.

use crate::faulty::FaultyDevice;
use crate::program::{capacity_bytes, Backend, Op, Preset, Program, PEER_CAPACITY};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{
    Allocator, Config, Device, DriverCall, Error, PoolId, StreamHandle, BORROW_POOL, MAX_REQUEST,
};
use gmlake_host::HostDevice;
use std::collections::BTreeMap;
use std::fmt;

const MIB: u64 = 1 << 20;
/// The host device's granularity, in bytes (the CUDA granularity on an H200).
const HOST_GRANULARITY: u64 = 2 * MIB;
/// The simulated and host devices are built this large; the fuzzer's own capacity is lower.
const BACKING_CAPACITY: u64 = 1 << 40;
/// Programs longer than this are cut, to keep each run short.
const MAX_OPS: usize = 400;
/// The two private pools programs use.
const POOLS: [PoolId; 2] = [PoolId(1, 0), PoolId(2, 0)];

/// An invariant the allocator broke: which step, which operation, what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// 0-based index of the operation (`usize::MAX` for the final teardown).
    pub step: usize,
    /// The operation, as `Debug` prints it.
    pub op: String,
    /// What was wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({}): {}", self.step, self.op, self.what)
    }
}

impl std::error::Error for Violation {}

/// What a program did, for the fuzz driver's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Operations run.
    pub ops: u64,
    /// Allocations served.
    pub allocations: u64,
    /// Requests refused (any error).
    pub refusals: u64,
    /// Driver failures that fired.
    pub faults_fired: u64,
    /// Stitched blocks created.
    pub stitches: u64,
}

/// Decodes `data` into a [`Program`] ([`Program::decode`]) and runs it.
///
/// # Errors
/// The first [`Violation`] found.
pub fn run_bytes(data: &[u8]) -> Result<Outcome, Violation> {
    run_program(&Program::decode(data))
}

/// Runs `program` on its backend.
///
/// # Errors
/// The first [`Violation`] found.
pub fn run_program(program: &Program) -> Result<Outcome, Violation> {
    let cfg = Config::parse(program.preset.config_string()).map_err(|e| Violation {
        step: 0,
        op: "config".into(),
        what: e.to_string(),
    })?;
    let capacity = capacity_bytes(program.capacity_units);
    match program.backend {
        Backend::Simulated => {
            let sim = if program.preset == Preset::PeerBorrow {
                // Device 0 of a pair; the peer's memory lives on in the fabric they share.
                let mut pair = SimulatedDevice::peers_of(&[BACKING_CAPACITY, PEER_CAPACITY]);
                pair.swap_remove(0)
            } else {
                SimulatedDevice::new(BACKING_CAPACITY)
            };
            let dev = FaultyDevice::new(sim, capacity);
            Runner::new(dev, cfg, false)?.run(&program.ops)
        }
        Backend::Host => {
            let dev = FaultyDevice::new(
                HostDevice::new(BACKING_CAPACITY, HOST_GRANULARITY),
                capacity,
            );
            Runner::new(dev, cfg, true)?.run(&program.ops)
        }
    }
}

/// A live allocation in the model.
struct LiveAlloc {
    size: u64,
    tag: u64,
    pool: PoolId,
}

struct Runner<D: Device> {
    a: Allocator<FaultyDevice<D>>,
    /// Whether allocation addresses are real host memory that may be written.
    data: bool,
    live: BTreeMap<u64, LiveAlloc>,
    freed: Vec<u64>,
    next_tag: u64,
    out: Outcome,
    step: usize,
    op: String,
    /// Users of each private pool, and captures underway.
    users: [u32; 2],
    captures: u32,
    /// Whether any private pool was used (then every step checks pool ownership).
    pools_used: bool,
}

impl<D: Device> Runner<D> {
    fn new(dev: FaultyDevice<D>, cfg: Config, data: bool) -> Result<Self, Violation> {
        let a = Allocator::new(dev, cfg).map_err(|e| Violation {
            step: 0,
            op: "Allocator::new".into(),
            what: e.to_string(),
        })?;
        Ok(Runner {
            a,
            data,
            live: BTreeMap::new(),
            freed: Vec::new(),
            next_tag: 1,
            out: Outcome::default(),
            step: 0,
            op: String::new(),
            users: [0; 2],
            captures: 0,
            pools_used: false,
        })
    }

    fn fail(&self, what: impl Into<String>) -> Violation {
        Violation {
            step: self.step,
            op: self.op.clone(),
            what: what.into(),
        }
    }

    fn run(mut self, ops: &[Op]) -> Result<Outcome, Violation> {
        for (i, op) in ops.iter().take(MAX_OPS).enumerate() {
            self.step = i;
            self.op = format!("{op:?}");
            if std::env::var_os("GMLAKE_FUZZ_TRACE").is_some() {
                eprintln!("step {i}: {op:?}");
            }
            self.apply(op)?;
            self.check()?;
            self.out.ops += 1;
        }
        self.out.faults_fired = self.a.device().injected();
        let out = self.out;
        self.teardown()?;
        Ok(out)
    }

    fn pick_live(&self, pick: u16) -> Option<u64> {
        if self.live.is_empty() {
            return None;
        }
        self.live
            .keys()
            .nth(usize::from(pick) % self.live.len())
            .copied()
    }

    fn apply(&mut self, op: &Op) -> Result<(), Violation> {
        match *op {
            Op::Alloc { size, stream } => {
                self.alloc(size.bytes(), u64::from(stream % 3), PoolId::DEFAULT)
            }
            Op::AllocInPool { size, stream, pool } => {
                let p = usize::from(pool % 2);
                self.alloc(size.bytes(), u64::from(stream % 3), POOLS[p])
            }
            Op::PoolUse { pool, acquire } => self.pool_use(usize::from(pool % 2), acquire),
            Op::Capture { begin } => {
                if begin {
                    self.a.begin_capture();
                    self.captures += 1;
                } else if self.captures > 0 {
                    self.a.end_capture();
                    self.captures -= 1;
                }
                Ok(())
            }
            Op::Free { pick } => match self.pick_live(pick) {
                Some(addr) => self.free_live(addr),
                None => Ok(()),
            },
            Op::FreeGarbage { addr } => {
                if self.is_live_start(addr) {
                    return Ok(());
                }
                self.expect_not_allocated(addr)
            }
            Op::DoubleFree { pick } => {
                if self.freed.is_empty() {
                    return Ok(());
                }
                let addr = self.freed[usize::from(pick) % self.freed.len()];
                if self.is_live_start(addr) {
                    return Ok(());
                }
                self.expect_not_allocated(addr)
            }
            Op::FreeInterior { pick, offset } => {
                let Some(addr) = self.pick_live(pick) else {
                    return Ok(());
                };
                let size = self.live[&addr].size;
                if size < 2 {
                    return Ok(());
                }
                let inner = addr + 1 + u64::from(offset) % (size - 1);
                self.expect_not_allocated(inner)
            }
            Op::RecordStream { pick, stream } => {
                let Some(addr) = self.pick_live(pick) else {
                    return Ok(());
                };
                self.a
                    .record_stream(addr, StreamHandle(u64::from(stream % 3)))
                    .map_err(|e| self.fail(format!("record_stream of a live allocation: {e}")))
            }
            Op::EmptyCache => {
                let fired_before = self.a.device().injected();
                match self.a.empty_cache() {
                    Ok(()) => Ok(()),
                    Err(Error::Device(_)) if self.a.device().injected() > fired_before => {
                        self.out.refusals += 1;
                        Ok(())
                    }
                    Err(e) => Err(self.fail(format!("empty_cache: {e}"))),
                }
            }
            Op::SetCapacity { units } => {
                self.a.device_mut().set_capacity(capacity_bytes(units));
                Ok(())
            }
            Op::InjectFault { call, skip } => {
                let kind = DriverCall::ALL[usize::from(call) % DriverCall::ALL.len()];
                self.a.device_mut().inject(kind, u32::from(skip % 8));
                Ok(())
            }
        }
    }

    fn is_live_start(&self, addr: u64) -> bool {
        self.live.contains_key(&addr)
    }

    fn pool_use(&mut self, p: usize, acquire: bool) -> Result<(), Violation> {
        self.pools_used = true;
        if acquire {
            self.users[p] += 1;
            return self
                .a
                .create_or_incref_pool(POOLS[p])
                .map_err(|e| self.fail(format!("create_or_incref_pool: {e}")));
        }
        let fired_before = self.a.device().injected();
        match self.a.release_pool(POOLS[p]) {
            Ok(()) if self.users[p] > 0 => {}
            Err(Error::Device(_)) if self.a.device().injected() > fired_before => {}
            Err(Error::InvalidArgument(_)) if self.users[p] == 0 => return Ok(()),
            other => return Err(self.fail(format!("release_pool: {other:?}"))),
        }
        self.users[p] -= 1;
        Ok(())
    }

    fn alloc(&mut self, size: u64, stream: u64, pool: PoolId) -> Result<(), Violation> {
        let fired_before = self.a.device().injected();
        let r = self.a.malloc_in(size, StreamHandle(stream), pool);
        match r {
            Ok(addr) => {
                if size == 0 || size > MAX_REQUEST {
                    return Err(self.fail(format!("a {size}-byte request was served")));
                }
                // No overlap with any live allocation's virtual range.
                if let Some((&prev, p)) = self.live.range(..=addr).next_back() {
                    if prev + p.size > addr {
                        return Err(
                            self.fail(format!("{addr:#x} is inside live {prev:#x}+{}", p.size))
                        );
                    }
                }
                if let Some((&next, _)) = self.live.range(addr..).next() {
                    if addr + size > next {
                        return Err(self.fail(format!("{addr:#x}+{size} overlaps live {next:#x}")));
                    }
                }
                if self.a.allocation_size(addr).is_none_or(|s| s < size) {
                    return Err(self.fail("allocation_size is missing or short"));
                }
                let tag = self.next_tag;
                self.next_tag += 1;
                if self.data {
                    // SAFETY: on the host backend an allocation's address range is mapped
                    // read/write host memory of at least `size` bytes until it is freed, and no
                    // other live allocation shares it (checked by `check_invariants`).
                    unsafe { write_tag(addr, size, tag) };
                }
                self.live.insert(addr, LiveAlloc { size, tag, pool });
                self.out.allocations += 1;
                Ok(())
            }
            Err(e) => {
                self.out.refusals += 1;
                let fired = self.a.device().injected() > fired_before;
                let fine = match &e {
                    Error::ZeroSize => size == 0,
                    Error::TooLarge { .. } => size > MAX_REQUEST,
                    Error::OutOfMemory(_) => size != 0 && size <= MAX_REQUEST,
                    Error::Device(_) => fired,
                    Error::InvalidArgument(_) => POOLS
                        .iter()
                        .position(|&p| p == pool)
                        .is_some_and(|i| self.users[i] == 0),
                    _ => false,
                };
                if fine {
                    Ok(())
                } else {
                    Err(self.fail(format!(
                        "malloc({size}) refused with {e} (fault fired: {fired})"
                    )))
                }
            }
        }
    }

    fn free_live(&mut self, addr: u64) -> Result<(), Violation> {
        let l = self.live.remove(&addr).expect("picked from the model");
        if self.data {
            // SAFETY: as in `alloc`: still live, so still mapped and ours alone.
            if let Err(what) = unsafe { check_tag(addr, l.size, l.tag) } {
                return Err(self.fail(what));
            }
        }
        let fired_before = self.a.device().injected();
        match self.a.free(addr) {
            Ok(()) => {}
            // Documented: when an event cannot be recorded on a stream the allocation was recorded
            // on and that stream cannot be synchronized either, the allocation stays live.
            Err(Error::Device(_)) if self.a.device().injected() > fired_before => {
                if self.a.allocation_size(addr) != Some(l.size) {
                    return Err(self.fail("a refused free did not leave the allocation live"));
                }
                self.out.refusals += 1;
                self.live.insert(addr, l);
                return Ok(());
            }
            Err(e) => return Err(self.fail(format!("free of a live allocation: {e}"))),
        }
        self.freed.push(addr);
        if self.freed.len() > 256 {
            self.freed.remove(0);
        }
        Ok(())
    }

    fn expect_not_allocated(&mut self, addr: u64) -> Result<(), Violation> {
        match self.a.free(addr) {
            Err(Error::NotAllocated { addr: got }) if got == addr => Ok(()),
            other => Err(self.fail(format!(
                "free({addr:#x}) of a non-live address answered {other:?}"
            ))),
        }
    }

    fn check(&mut self) -> Result<(), Violation> {
        self.a
            .check_invariants()
            .map_err(|e| self.fail(format!("check_invariants: {e}")))?;
        let stats = self.a.stats();
        let want: u64 = self.live.values().map(|l| l.size).sum();
        let got = stats.requested_bytes.all.current;
        if u64::try_from(got).ok() != Some(want) {
            return Err(self.fail(format!("requested_bytes {got} != model {want}")));
        }
        if self.a.live_allocations() != self.live.len() {
            return Err(self.fail(format!(
                "{} live allocations, model has {}",
                self.a.live_allocations(),
                self.live.len()
            )));
        }
        self.out.stitches = stats.num_stitches;
        if self.pools_used {
            self.check_pools()?;
        }
        Ok(())
    }

    /// Every live allocation lies in memory of its own pool.
    fn check_pools(&self) -> Result<(), Violation> {
        let snap = self.a.snapshot();
        for (&addr, l) in &self.live {
            let owner = match snap.stitched.iter().find(|s| s.address == addr) {
                Some(st) => Some(st.owner),
                None => snap
                    .segments
                    .iter()
                    .find(|s| s.address <= addr && addr < s.address + s.size)
                    .map(|s| s.owner),
            };
            // Borrowed memory (its own internal pool) serves the default pool.
            let owner = owner.map(|o| if o == BORROW_POOL { PoolId::DEFAULT } else { o });
            if owner != Some(l.pool) {
                return Err(self.fail(format!(
                    "{addr:#x} of pool {:?} lies in memory of {owner:?}",
                    l.pool
                )));
            }
        }
        Ok(())
    }

    fn teardown(mut self) -> Result<(), Violation> {
        self.step = usize::MAX;
        self.op = "teardown".into();
        self.a.device_mut().clear_faults();
        self.a.device_mut().set_capacity(BACKING_CAPACITY);
        let addrs: Vec<u64> = self.live.keys().copied().collect();
        for addr in addrs {
            self.free_live(addr)?;
        }
        let held = self
            .a
            .release_all()
            .map_err(|e| self.fail(format!("release_all: {e}")))?;
        if held != 0 {
            return Err(self.fail(format!("{held} device objects still held")));
        }
        self.a
            .check_invariants()
            .map_err(|e| self.fail(format!("check_invariants after teardown: {e}")))?;
        if let Some(b) = self.a.device().books() {
            if (b.handles, b.ranges, b.mappings, b.events) != (0, 0, 0, 0) {
                return Err(self.fail(format!(
                    "leaked: {} handles, {} ranges, {} mappings, {} events",
                    b.handles, b.ranges, b.mappings, b.events
                )));
            }
        }
        Ok(())
    }
}

/// Writes a byte derived from `tag` over the first 64 bytes of the allocation, then `tag` itself
/// into its first 8 bytes and (from 16 bytes up) its last 8 bytes.
///
/// # Safety
/// `[addr, addr + size)` must be writable memory owned by the caller.
unsafe fn write_tag(addr: u64, size: u64, tag: u64) {
    let p = addr as *mut u8;
    let head = size.min(64) as usize;
    // SAFETY: within the allocation, per the contract.
    unsafe {
        std::ptr::write_bytes(p, tag as u8, head);
        if size >= 8 {
            std::ptr::write_unaligned(p as *mut u64, tag);
        }
        if size >= 16 {
            std::ptr::write_unaligned(p.add(size as usize - 8) as *mut u64, tag);
        }
    }
}

/// Checks what [`write_tag`] wrote.
///
/// # Safety
/// `[addr, addr + size)` must be readable memory owned by the caller.
unsafe fn check_tag(addr: u64, size: u64, tag: u64) -> Result<(), String> {
    let p = addr as *const u8;
    // SAFETY: within the allocation, per the contract.
    unsafe {
        if size >= 8 {
            let head = std::ptr::read_unaligned(p as *const u64);
            let tail = if size >= 16 {
                std::ptr::read_unaligned(p.add(size as usize - 8) as *const u64)
            } else {
                tag
            };
            if head != tag || tail != tag {
                return Err(format!(
                    "allocation {addr:#x} (tag {tag}): head {head}, tail {tail}"
                ));
            }
            for i in 8..size.min(64) as usize {
                if size >= 16 && size as usize - 8 <= i {
                    break;
                }
                if *p.add(i) != tag as u8 {
                    return Err(format!(
                        "allocation {addr:#x} (tag {tag}): byte {i} changed"
                    ));
                }
            }
        } else {
            for i in 0..size as usize {
                if *p.add(i) != tag as u8 {
                    return Err(format!(
                        "allocation {addr:#x} (tag {tag}): byte {i} changed"
                    ));
                }
            }
        }
    }
    Ok(())
}
