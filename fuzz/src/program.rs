//! The operation language the fuzzer decodes from raw bytes.

use arbitrary::{Arbitrary, Unstructured};

const MIB: u64 = 1 << 20;

/// Which backend a program runs on.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `gmlake_core::sim::SimulatedDevice`: bookkeeping only, fast.
    Simulated,
    /// `gmlake_host::HostDevice`: memfd handles mapped with `mmap`, so data is checked too.
    Host,
}

/// Which allocator configuration a program runs with.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// `Config::default()`.
    Default,
    /// Eager stitching with small handles and tight garbage-collection bounds, so that stitching,
    /// reuse and StitchFree happen within a few operations, and stitches over chunks' free ends
    /// once 4 requests in a row needed no new memory (`free_ends_after`).
    EagerStitch,
    /// Stitching off (`stitching:false`): the plain caching allocator.
    NoStitch,
    /// Eager stitching with borrowing from a peer device on (`peer_borrow`): on the simulated
    /// backend, the device has a peer of `PEER_CAPACITY` bytes, so that requests past the
    /// capacity are served by stitched blocks that span both devices.
    PeerBorrow,
}

/// The peer device's memory under [`Preset::PeerBorrow`], in bytes.
pub const PEER_CAPACITY: u64 = 96 * MIB;

impl Preset {
    /// The configuration string (`GMLAKE_CONF` syntax) of this preset.
    pub fn config_string(self) -> &'static str {
        match self {
            Preset::Default => "",
            Preset::EagerStitch => "frag_limit:0,max_handle_size:8MB,min_growth:2MB,max_stitch_mappings:12,stitched_bytes_limit:48MB,free_ends_after:4",
            Preset::NoStitch => "stitching:false",
            Preset::PeerBorrow => "frag_limit:0,max_handle_size:8MB,min_growth:2MB,peer_borrow:on,peer_borrow_limit:64MB",
        }
    }
}

/// A request size, in bytes, by class so that every class is reached often.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum SizeChoice {
    /// 0 bytes: must be refused with `ZeroSize`.
    Zero,
    /// 1 byte to 64 KiB (the small pool).
    Small(u16),
    /// 1 byte to 4 MiB.
    Medium(u32),
    /// 1 byte to 40 MiB.
    Large(u32),
    /// Any size at all, mostly absurd ones.
    Any(u64),
}

impl SizeChoice {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            SizeChoice::Zero => 0,
            SizeChoice::Small(n) => 1 + u64::from(n),
            SizeChoice::Medium(n) => 1 + u64::from(n) % (4 * MIB),
            SizeChoice::Large(n) => 1 + u64::from(n) % (40 * MIB),
            SizeChoice::Any(n) => n,
        }
    }
}

/// One operation. `pick` values choose among the live (or previously freed) allocations modulo
/// their count; streams are taken modulo 3.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// `malloc(size, stream)`.
    Alloc {
        /// The size.
        size: SizeChoice,
        /// The stream.
        stream: u8,
    },
    /// Free a live allocation.
    Free {
        /// Which one.
        pick: u16,
    },
    /// Free an address that was never returned.
    FreeGarbage {
        /// The address.
        addr: u64,
    },
    /// Free an address that was freed before and is not live again.
    DoubleFree {
        /// Which freed address.
        pick: u16,
    },
    /// Free an address inside a live allocation (not its start).
    FreeInterior {
        /// Which allocation.
        pick: u16,
        /// Offset in bytes (taken modulo the allocation's size, and at least 1).
        offset: u32,
    },
    /// `record_stream` of a live allocation.
    RecordStream {
        /// Which allocation.
        pick: u16,
        /// The stream.
        stream: u8,
    },
    /// `empty_cache`.
    EmptyCache,
    /// Change the device's capacity to 16 MiB x (1 + `units` % 24).
    SetCapacity {
        /// The new capacity, in units of 16 MiB.
        units: u8,
    },
    /// `malloc_in(size, stream, pool)` for one of two private pools (`pool` % 2).
    AllocInPool {
        /// The size.
        size: SizeChoice,
        /// The stream.
        stream: u8,
        /// Which pool.
        pool: u8,
    },
    /// A user of a private pool comes (`create_or_incref_pool`) or goes (`release_pool`).
    PoolUse {
        /// Which pool (% 2).
        pool: u8,
        /// Whether a user comes.
        acquire: bool,
    },
    /// A CUDA graph capture begins or ends.
    Capture {
        /// Whether it begins.
        begin: bool,
    },
    /// Make one upcoming driver call fail.
    InjectFault {
        /// The call kind (index into `DriverCall::ALL`, modulo its length).
        call: u8,
        /// How many calls of that kind succeed first (modulo 8).
        skip: u8,
    },
}

/// A whole fuzz input: the backend, the configuration, the starting capacity and the operations.
#[derive(Arbitrary, Clone, Debug)]
pub struct Program {
    /// The backend.
    pub backend: Backend,
    /// The configuration.
    pub preset: Preset,
    /// Starting capacity: 16 MiB x (1 + `capacity_units` % 24).
    pub capacity_units: u8,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Program {
    /// Decodes a program from raw fuzz bytes: the header fields, then operations until the bytes
    /// run out (unlike `arbitrary`'s own `Vec` decoding, which stops at a continuation bit and so
    /// gives random inputs only a couple of operations). Never fails: missing bytes read as zeros.
    pub fn decode(data: &[u8]) -> Program {
        let mut u = Unstructured::new(data);
        let backend = Backend::arbitrary(&mut u).unwrap_or(Backend::Simulated);
        let preset = Preset::arbitrary(&mut u).unwrap_or(Preset::Default);
        let capacity_units = u8::arbitrary(&mut u).unwrap_or(0);
        let mut ops = Vec::new();
        while !u.is_empty() {
            match Op::arbitrary(&mut u) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        Program {
            backend,
            preset,
            capacity_units,
            ops,
        }
    }
}

/// Bytes that decode to a value: the inverse of `arbitrary`'s derived decoding (integers little
/// endian, `bool` as a byte, an enum's variant as a `u32` scaled onto the variant count, then its
/// fields), so that a program can be kept as a Rust value and written as an input.
trait Encode {
    fn encode(&self, out: &mut Vec<u8>);
}

/// The tag of variant `index` of an enum of `count` variants.
fn tag(index: u64, count: u64, out: &mut Vec<u8>) {
    let d = (index << 32).div_ceil(count) as u32;
    out.extend_from_slice(&d.to_le_bytes());
}

macro_rules! encode_ints {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
encode_ints!(u8, u16, u32, u64);

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Encode for Backend {
    fn encode(&self, out: &mut Vec<u8>) {
        tag(*self as u64, 2, out);
    }
}

impl Encode for Preset {
    fn encode(&self, out: &mut Vec<u8>) {
        tag(*self as u64, 4, out);
    }
}

impl Encode for SizeChoice {
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            SizeChoice::Zero => tag(0, 5, out),
            SizeChoice::Small(n) => (tag(1, 5, out), n.encode(out)).1,
            SizeChoice::Medium(n) => (tag(2, 5, out), n.encode(out)).1,
            SizeChoice::Large(n) => (tag(3, 5, out), n.encode(out)).1,
            SizeChoice::Any(n) => (tag(4, 5, out), n.encode(out)).1,
        }
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        const N: u64 = 12;
        match *self {
            Op::Alloc { size, stream } => {
                tag(0, N, out);
                size.encode(out);
                stream.encode(out);
            }
            Op::Free { pick } => (tag(1, N, out), pick.encode(out)).1,
            Op::FreeGarbage { addr } => (tag(2, N, out), addr.encode(out)).1,
            Op::DoubleFree { pick } => (tag(3, N, out), pick.encode(out)).1,
            Op::FreeInterior { pick, offset } => {
                tag(4, N, out);
                pick.encode(out);
                offset.encode(out);
            }
            Op::RecordStream { pick, stream } => {
                tag(5, N, out);
                pick.encode(out);
                stream.encode(out);
            }
            Op::EmptyCache => tag(6, N, out),
            Op::SetCapacity { units } => (tag(7, N, out), units.encode(out)).1,
            Op::AllocInPool { size, stream, pool } => {
                tag(8, N, out);
                size.encode(out);
                stream.encode(out);
                pool.encode(out);
            }
            Op::PoolUse { pool, acquire } => {
                tag(9, N, out);
                pool.encode(out);
                acquire.encode(out);
            }
            Op::Capture { begin } => (tag(10, N, out), begin.encode(out)).1,
            Op::InjectFault { call, skip } => {
                tag(11, N, out);
                call.encode(out);
                skip.encode(out);
            }
        }
    }
}

impl Program {
    /// The bytes [`Program::decode`] turns into this program (its inverse), to keep an input that
    /// once failed as a program that means the same whatever operations are added later.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.backend.encode(&mut out);
        self.preset.encode(&mut out);
        self.capacity_units.encode(&mut out);
        for op in &self.ops {
            op.encode(&mut out);
        }
        out
    }
}

/// 16 MiB x (1 + `units` % 24), in bytes.
pub(crate) fn capacity_bytes(units: u8) -> u64 {
    16 * MIB * (1 + u64::from(units) % 24)
}
