//! Allocator configuration: a struct, and a parser for PyTorch-style strings such as
//! `frag_limit:64MB,reuse_limit:10,defrag_level:0` that also accepts GMLake's environment names
//! (`vmmDefragment`, `fragLimit`, `reuseLimit`, `defragLevel`, `autoGC`).

use alloc::string::{String, ToString};
use core::fmt;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The default of [`Config::free_ends_after`], in requests: long enough that the first step of a
/// job (its working set still growing) never counts as settled; 300 and 3,000 measured alike on
/// 34 traces, 10,000 too late for short jobs (`docs/design.md`, "Settling").
pub const SETTLED_REQUESTS: u64 = 3000;

/// How the allocator behaves. [`Config::default`] is meant to serve every workload untuned.
///
/// Sizes are bytes. Thread-safety: a plain value.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Whether free blocks may be stitched into new virtual ranges (GMLake's `vmmDefragment`).
    /// Default `true`. With `false`, gmlake behaves like a best-fit caching allocator on VMM
    /// segments that still grows only by what a request lacks.
    pub stitching: bool,
    /// Smallest rounded request, in bytes, that may be served by stitching (GMLake's `fragLimit`,
    /// whose default was 512 MiB). Default 2 MiB: stitching pays for itself on any request that
    /// spans a granule, because the alternative, new physical memory, costs a driver call too.
    pub frag_limit: u64,
    /// A cached stitched block of size `s` may serve a request of `r` bytes only if
    /// `s <= r * reuse_limit` (GMLake's `reuseLimit`). Default 10, as in GMLake: the unused tail
    /// of a reused stitched block stays available to other allocations, so only virtual space is
    /// pinned.
    pub reuse_limit: f64,
    /// How eagerly to stitch (GMLake's `defragLevel`): 0 stitches before asking the device for new
    /// memory; 1 only when the device refuses new memory; 2 only after releasing cached memory.
    /// Default 0.
    pub defrag_level: u32,
    /// Bound on the virtual bytes of all stitched blocks; past it the least recently used free
    /// stitched blocks are garbage-collected (GMLake's `autoGC`, given there in GiB). `None` (the
    /// default) means twice the device's total memory.
    pub stitched_bytes_limit: Option<u64>,
    /// Bound on the number of live mappings made for stitched blocks; past it the least recently
    /// used free stitched blocks are garbage-collected. Default 65,536.
    pub max_stitch_mappings: u64,
    /// Largest physical handle, in bytes (rounded to the granularity). Growing by `n` bytes creates
    /// `ceil(n / max_handle_size)` handles of equal size. Default 1 GiB; see `docs/design.md` for
    /// the measurements behind it.
    pub max_handle_size: u64,
    /// A growth for a request of `r` bytes creates physical handles of `r / handle_divisions`
    /// bytes (rounded up to the granularity, at most `max_handle_size`), so that large tensors are
    /// made of few large chunks and small ones of small chunks. Default 16 (0 counts as 1); see
    /// `docs/design.md`.
    pub handle_divisions: u64,
    /// A growth for a request of at least this many bytes divides it by `large_handle_divisions`
    /// instead of `handle_divisions`. Default 2 GiB: a 7 GB tensor grown in sixteenths costs
    /// sixteen handle mappings, each about 40-60 us of `cuMemSetAccess` and `cuMemCreate` on the
    /// H200, where PyTorch pays one 278 us `cudaMalloc`; see `docs/design.md`, "Very large
    /// growths", for the traces that chose it and the held-out set that judged it.
    pub large_request_size: u64,
    /// How many handles a growth for a request of at least `large_request_size` bytes is cut into
    /// (before the `max_handle_size` cap). Default 4 (0 counts as 1).
    pub large_handle_divisions: u64,
    /// Smallest physical handle a large-pool growth creates (rounded to the granularity), in
    /// bytes, unless the growth itself is smaller. Default 32 MiB; see `docs/design.md`.
    pub min_handle_size: u64,
    /// Whether a whole free chunk much larger than a request is cut in two before the request
    /// breaks it (see `docs/design.md`). Default true.
    pub split_chunks: bool,
    /// Whether a stitch may also map chunks of which only one end is free from the first request
    /// on (by default only once settled: `free_ends_after`), and also around the new memory of a
    /// stitch that grows: a chunk whose free bytes end it, first in the range, and one whose free
    /// bytes start it, last; the stitched block serves from the first chunk's free bytes on.
    /// Default `false`: against the default, on 38 traces it raised utilization on 30 (llama_packed
    /// 0.952 to 0.989) and lowered it on 7 (gpt2_gen_var by 0.025), at up to 2.7x PyTorch's
    /// driver time on the given traces; `docs/design.md`, "Stitching the free ends of chunks".
    pub stitch_free_ends: bool,
    /// After this many requests in a row served without new memory, the job has settled: a
    /// request that whole free chunks cannot serve tries a stitch over chunks' free ends (as
    /// `stitch_free_ends` does always) before it grows, since a growth now would raise the peak of
    /// every step to come, and a job short of memory stops cutting chunks. Default
    /// [`SETTLED_REQUESTS`]; `docs/design.md`, "Settling" and "Short and settled".
    pub free_ends_after: u64,
    /// Smallest growth of the large pool, in bytes (rounded to the granularity): a request that
    /// needs new memory gets at least this much, and the surplus serves later requests (PyTorch
    /// grows by 20 MiB, `kLargeBuffer`, for requests under 10 MiB). Default 2 MiB (one H200 granule): see
    /// `docs/design.md` for the measured trade-off between driver calls and utilization.
    pub min_growth: u64,
    /// Virtual address space is reserved from the device in arenas of at least this many bytes,
    /// from which segments and stitched blocks take their ranges. Default 64 GiB.
    pub va_arena_size: u64,
    /// Requests of at most this many bytes belong to the small pool (PyTorch's `kSmallSize`),
    /// whose segments are one granule: such a request is served by a free small-pool block, else
    /// by a free large-pool block, and only then by growing the small pool; statistics count it
    /// under the pool whose memory serves it. Default 1 MiB.
    pub small_size: u64,
    /// Fraction of the device's memory this allocator may reserve (PyTorch's
    /// `per_process_memory_fraction`), in `(0, 1]`. Default: no limit.
    pub memory_fraction: Option<f64>,
    /// Whether a request that finds no room on this device may be served, in part or whole, by
    /// physical memory created on a peer device (over NVLink), mapped into this device's address
    /// space (a stitched block that spans devices). Default false: nothing is ever borrowed.
    pub peer_borrow: bool,
    /// The most bytes borrowed from any one peer at once (rounded down to the granularity).
    /// Default: a quarter of this device's memory ([`crate::stats::Stats::borrowed_bytes`]
    /// counts what is borrowed).
    pub peer_borrow_limit: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stitching: true,
            frag_limit: 2 * MIB,
            reuse_limit: 10.0,
            defrag_level: 0,
            stitched_bytes_limit: None,
            max_stitch_mappings: 65_536,
            max_handle_size: GIB,
            min_growth: 2 * MIB,
            handle_divisions: 16,
            large_request_size: 2 * GIB,
            large_handle_divisions: 4,
            split_chunks: true,
            stitch_free_ends: false,
            free_ends_after: SETTLED_REQUESTS,
            min_handle_size: 32 * MIB,
            va_arena_size: 64 * GIB,
            small_size: MIB,
            memory_fraction: None,
            peer_borrow: false,
            peer_borrow_limit: None,
        }
    }
}

/// A refused configuration string: the offending part and the valid keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// What was wrong, naming the key and value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; valid keys: {}", self.message, VALID_KEYS)
    }
}

impl core::error::Error for ConfigError {}

/// The keys [`Config::parse`] accepts, as listed in its errors.
pub const VALID_KEYS: &str = "stitching (vmmDefragment), frag_limit (fragLimit), reuse_limit (reuseLimit), \
defrag_level (defragLevel), stitched_bytes_limit (autoGC, in GiB when unitless), max_stitch_mappings, \
max_handle_size, min_handle_size, handle_divisions, large_request_size, large_handle_divisions, split_chunks, stitch_free_ends, free_ends_after, min_growth, va_arena_size, small_size, per_process_memory_fraction, peer_borrow, peer_borrow_limit";

fn err(message: String) -> ConfigError {
    ConfigError { message }
}

/// Parses a byte size: `digits [ "." digits ] [ unit ]`, with no space inside, where the unit is
/// `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB` or `T`/`TB`/`TiB`, case-insensitive, all
/// binary (as in PyTorch's `PYTORCH_CUDA_ALLOC_CONF`: `64MB` is 64 MiB). A unitless number is
/// multiplied by `unitless`. White space around the whole is ignored.
///
/// # Errors
/// When the text is not such a size, or the size does not fit in a `u64`.
pub fn parse_size(text: &str, unitless: u64) -> Result<u64, ConfigError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if !is_decimal(num) {
        return Err(err(alloc::format!("`{text}` is not a size")));
    }
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" => unitless,
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(err(alloc::format!(
                "unknown size unit `{other}` in `{text}` (B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB)"
            )))
        }
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| err(alloc::format!("size `{text}` overflows")));
    }
    let bytes = num.parse::<f64>().unwrap_or(f64::INFINITY) * mult as f64;
    if !(bytes.is_finite() && bytes < u64::MAX as f64) {
        return Err(err(alloc::format!("size `{text}` is out of range")));
    }
    Ok(bytes as u64)
}

/// `digits [ "." digits ]`.
fn is_decimal(t: &str) -> bool {
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    match t.split_once('.') {
        Some((whole, frac)) => digits(whole) && digits(frac),
        None => digits(t),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(err(alloc::format!(
            "`{key}` takes true/false, on/off, yes/no or 1/0, not `{v}`"
        ))),
    }
}

fn parse_f64(key: &str, v: &str) -> Result<f64, ConfigError> {
    is_decimal(v)
        .then(|| v.parse::<f64>().ok())
        .flatten()
        .ok_or_else(|| err(alloc::format!("`{key}` takes a decimal number, not `{v}`")))
}

fn parse_u64(key: &str, v: &str) -> Result<u64, ConfigError> {
    v.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| v.parse().ok())
        .flatten()
        .ok_or_else(|| err(alloc::format!("`{key}` takes an integer, not `{v}`")))
}

/// The canonical name of a key (GMLake's names map to ours), or `None` for an unknown key.
fn canonical(key: &str) -> Option<&'static str> {
    Some(match key {
        "stitching" | "vmmDefragment" => "stitching",
        "frag_limit" | "fragLimit" => "frag_limit",
        "reuse_limit" | "reuseLimit" => "reuse_limit",
        "defrag_level" | "defragLevel" => "defrag_level",
        "stitched_bytes_limit" | "autoGC" => "stitched_bytes_limit",
        "per_process_memory_fraction" | "memory_fraction" => "per_process_memory_fraction",
        "max_stitch_mappings" => "max_stitch_mappings",
        "max_handle_size" => "max_handle_size",
        "min_handle_size" => "min_handle_size",
        "handle_divisions" => "handle_divisions",
        "large_request_size" => "large_request_size",
        "large_handle_divisions" => "large_handle_divisions",
        "split_chunks" => "split_chunks",
        "stitch_free_ends" => "stitch_free_ends",
        "free_ends_after" => "free_ends_after",
        "min_growth" => "min_growth",
        "va_arena_size" => "va_arena_size",
        "small_size" => "small_size",
        "peer_borrow" => "peer_borrow",
        "peer_borrow_limit" => "peer_borrow_limit",
        _ => return None,
    })
}

impl Config {
    /// Parses a configuration string, starting from the defaults. The grammar, in full (white
    /// space is spaces and tabs):
    ///
    /// ```text
    /// config = blank | entry *( "," entry )       ; blank (only white space): the defaults
    /// entry  = ws key ws ( ":" | "=" ) ws value ws  ; PyTorch's key:value; GMLake's key=value
    /// key    = one of VALID_KEYS, case-sensitive
    /// value  = one or more characters, none of them white space or ","
    /// size   = digits [ "." digits ] [ unit ]      ; unit: B K KB KiB M MB MiB G GB GiB T TB TiB,
    ///                                             ;   any case, all binary (64MB = 64 MiB)
    /// bool   = true | false | on | off | yes | no | 1 | 0   (any case)
    /// ```
    ///
    /// Sizes are in bytes when unitless, except `autoGC`/`stitched_bytes_limit` (GiB, as in
    /// GMLake); GMLake's `vmmDefragment` takes an integer (`<= 0` turns stitching off). Refused:
    /// an unknown key, a key given twice (also under its other name), an empty entry (`a:1,,b:2`,
    /// a trailing comma), white space inside a value (`512 MB`), and any value out of range
    /// ([`Config::validate`]). `core/tests/config_grammar.rs` holds the table of accepted and
    /// refused inputs.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the offending entry; its display lists the valid keys.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        if text.trim().is_empty() {
            return Ok(cfg);
        }
        let mut seen: alloc::vec::Vec<&'static str> = alloc::vec::Vec::new();
        for entry in text.split(',') {
            let pair = entry.trim();
            if pair.is_empty() {
                return Err(err(alloc::format!("empty entry in `{text}`")));
            }
            let (key, value) = pair
                .split_once([':', '='])
                .ok_or_else(|| err(alloc::format!("`{pair}` is not a key:value pair")))?;
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(err(alloc::format!("`{pair}`: the value must be one word")));
            }
            let name = canonical(key).ok_or_else(|| err(alloc::format!("unknown key `{key}`")))?;
            if seen.contains(&name) {
                return Err(err(alloc::format!("`{key}` is given twice")));
            }
            seen.push(name);
            cfg.set(key, value)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets one key (see [`Config::parse`] for the names and units).
    ///
    /// # Errors
    /// An unknown key or a bad value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "stitching" => self.stitching = parse_bool(key, value)?,
            "split_chunks" => self.split_chunks = parse_bool(key, value)?,
            "stitch_free_ends" => self.stitch_free_ends = parse_bool(key, value)?,
            "free_ends_after" => self.free_ends_after = parse_u64(key, value)?,
            "vmmDefragment" => {
                let negative = value.strip_prefix('-');
                let v = parse_u64(key, negative.unwrap_or(value))?;
                self.stitching = negative.is_none() && v > 0;
            }
            "frag_limit" | "fragLimit" => self.frag_limit = parse_size(value, 1)?,
            "reuse_limit" | "reuseLimit" => self.reuse_limit = parse_f64(key, value)?,
            "defrag_level" | "defragLevel" => {
                self.defrag_level = parse_u64(key, value)?.min(u32::MAX as u64) as u32
            }
            "stitched_bytes_limit" | "autoGC" => {
                self.stitched_bytes_limit = Some(parse_size(value, GIB)?)
            }
            "max_stitch_mappings" => self.max_stitch_mappings = parse_u64(key, value)?,
            "max_handle_size" => self.max_handle_size = parse_size(value, 1)?,
            "min_growth" => self.min_growth = parse_size(value, 1)?,
            "min_handle_size" => self.min_handle_size = parse_size(value, 1)?,
            "handle_divisions" => self.handle_divisions = parse_u64(key, value)?,
            "large_request_size" => self.large_request_size = parse_size(value, 1)?,
            "large_handle_divisions" => self.large_handle_divisions = parse_u64(key, value)?,
            "va_arena_size" => self.va_arena_size = parse_size(value, 1)?,
            "small_size" => self.small_size = parse_size(value, 1)?,
            "peer_borrow" => self.peer_borrow = parse_bool(key, value)?,
            "peer_borrow_limit" => self.peer_borrow_limit = Some(parse_size(value, 1)?),
            "per_process_memory_fraction" | "memory_fraction" => {
                self.memory_fraction = Some(parse_f64(key, value)?)
            }
            _ => return Err(err(alloc::format!("unknown key `{key}`"))),
        }
        Ok(())
    }

    /// Checks that values are in range.
    ///
    /// # Errors
    /// `reuse_limit < 1`, `defrag_level > 2`, a zero `max_handle_size`, `small_size` above 64 MiB,
    /// or a memory fraction outside `(0, 1]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.reuse_limit.is_nan() || self.reuse_limit < 1.0 {
            return Err(err(alloc::format!(
                "reuse_limit must be at least 1, not {}",
                self.reuse_limit
            )));
        }
        if self.defrag_level > 2 {
            return Err(err(alloc::format!(
                "defrag_level must be 0, 1 or 2, not {}",
                self.defrag_level
            )));
        }
        if self.va_arena_size == 0 {
            return Err(err("va_arena_size must be positive".to_string()));
        }
        if self.max_handle_size == 0 {
            return Err(err("max_handle_size must be positive".to_string()));
        }
        if self.small_size > 64 * MIB {
            return Err(err(alloc::format!(
                "small_size must be at most 64 MiB, not {}",
                self.small_size
            )));
        }
        if let Some(f) = self.memory_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return Err(err(alloc::format!(
                    "per_process_memory_fraction must be in (0, 1], not {f}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pytorch_and_gmlake_names() {
        let c = Config::parse("frag_limit:64MB,reuse_limit:4,defrag_level:1").unwrap();
        assert_eq!(c.frag_limit, 64 * MIB);
        assert_eq!(c.reuse_limit, 4.0);
        assert_eq!(c.defrag_level, 1);
        let g = Config::parse(
            "vmmDefragment=0, fragLimit=536870912, reuseLimit=2.5, defragLevel=2, autoGC=80",
        )
        .unwrap();
        assert!(!g.stitching);
        assert_eq!(g.frag_limit, 512 * MIB);
        assert_eq!(g.reuse_limit, 2.5);
        assert_eq!(g.stitched_bytes_limit, Some(80 * GIB));
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let l = Config::parse("large_request_size:1GB,large_handle_divisions:8").unwrap();
        assert_eq!((l.large_request_size, l.large_handle_divisions), (GIB, 8));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values_listing_valid_keys() {
        let e = Config::parse("frag_limt:1").unwrap_err();
        assert!(e.message.contains("frag_limt"));
        assert!(e.to_string().contains("reuse_limit"));
        assert!(Config::parse("frag_limit:lots").is_err());
        assert!(Config::parse("reuse_limit:0.5").is_err());
        assert!(Config::parse("defrag_level:7").is_err());
        assert!(Config::parse("per_process_memory_fraction:1.5").is_err());
        assert!(Config::parse("stitching").is_err());
        assert!(Config::parse("large_handle_divisions:-1").is_err());
        assert!(Config::parse("large_request_size:huge").is_err());
        assert!(Config::parse("frag_limit:99999999999T").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("3", 1).unwrap(), 3);
        assert_eq!(parse_size("2KiB", 1).unwrap(), 2048);
        assert_eq!(parse_size("1.5gb", 1).unwrap(), 3 * GIB / 2);
        assert_eq!(parse_size("10", GIB).unwrap(), 10 * GIB);
        assert!(parse_size("MB", 1).is_err());
        assert!(parse_size("4 parsecs", 1).is_err());
    }
}
