//! The configuration grammar of `Config::parse`, as a table: every input here is accepted with
//! the values shown, or refused with a message naming what is wrong. The grammar is written out in
//! `Config::parse`'s documentation and in the README.

use gmlake_core::Config;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Accepted inputs and what they set, checked by a closure on the result.
type Accepted = (&'static str, fn(&Config) -> bool);

const ACCEPTED: &[Accepted] = &[
    ("", |c| *c == Config::default()),
    ("   ", |c| *c == Config::default()),
    ("frag_limit:64MB", |c| c.frag_limit == 64 * MIB),
    ("frag_limit=64MB", |c| c.frag_limit == 64 * MIB),
    ("  frag_limit : 64MB  ", |c| c.frag_limit == 64 * MIB),
    ("frag_limit:64mib", |c| c.frag_limit == 64 * MIB),
    ("frag_limit:64M", |c| c.frag_limit == 64 * MIB),
    ("frag_limit:512MiB", |c| c.frag_limit == 512 * MIB),
    ("frag_limit:1.5GB", |c| c.frag_limit == 3 * GIB / 2),
    ("frag_limit:4096", |c| c.frag_limit == 4096),
    ("frag_limit:4096B", |c| c.frag_limit == 4096),
    ("frag_limit:2KiB", |c| c.frag_limit == 2048),
    ("frag_limit:1T", |c| c.frag_limit == 1 << 40),
    ("fragLimit=536870912", |c| c.frag_limit == 512 * MIB),
    ("autoGC=80", |c| c.stitched_bytes_limit == Some(80 * GIB)),
    ("stitched_bytes_limit:80", |c| {
        c.stitched_bytes_limit == Some(80 * GIB)
    }),
    ("stitched_bytes_limit:80MB", |c| {
        c.stitched_bytes_limit == Some(80 * MIB)
    }),
    ("reuse_limit:2.5", |c| c.reuse_limit == 2.5),
    ("reuseLimit=4", |c| c.reuse_limit == 4.0),
    ("defrag_level:2", |c| c.defrag_level == 2),
    ("vmmDefragment=0", |c| !c.stitching),
    ("vmmDefragment=-1", |c| !c.stitching),
    ("vmmDefragment=1", |c| c.stitching),
    ("stitching:off", |c| !c.stitching),
    ("stitching:FALSE", |c| !c.stitching),
    ("stitching:yes", |c| c.stitching),
    ("split_chunks:0", |c| !c.split_chunks),
    ("stitch_free_ends:on", |c| c.stitch_free_ends),
    ("handle_divisions:8,large_handle_divisions:2", |c| {
        c.handle_divisions == 8 && c.large_handle_divisions == 2
    }),
    ("per_process_memory_fraction:0.5", |c| {
        c.memory_fraction == Some(0.5)
    }),
    ("memory_fraction:1", |c| c.memory_fraction == Some(1.0)),
    ("small_size:2MB,min_growth:4MB,va_arena_size:1TB", |c| {
        c.small_size == 2 * MIB && c.min_growth == 4 * MIB && c.va_arena_size == 1 << 40
    }),
    ("peer_borrow:on,peer_borrow_limit:8GB", |c| {
        c.peer_borrow && c.peer_borrow_limit == Some(8 << 30)
    }),
    ("", |c| !c.peer_borrow && c.peer_borrow_limit.is_none()),
];

/// Refused inputs and a word the message must contain.
const REFUSED: &[(&str, &str)] = &[
    ("frag_limt:1", "unknown key `frag_limt`"),
    ("FRAG_LIMIT:1", "unknown key"),
    ("frag_limit:64MB,", "empty entry"),
    (",frag_limit:64MB", "empty entry"),
    ("frag_limit:64MB,,reuse_limit:2", "empty entry"),
    ("frag_limit:64MB,frag_limit:32MB", "given twice"),
    ("frag_limit:64MB,fragLimit=1", "given twice"),
    ("stitching:1,vmmDefragment=1", "given twice"),
    ("frag_limit:512 MB", "one word"),
    ("frag_limit:", "one word"),
    ("frag_limit", "not a key:value pair"),
    ("frag_limit:lots", "not a size"),
    ("frag_limit:64XB", "unknown size unit"),
    ("frag_limit:-1", "not a size"),
    ("frag_limit:1e9", "unknown size unit"),
    ("frag_limit:.5GB", "not a size"),
    ("frag_limit:99999999999T", "overflows"),
    ("reuse_limit:0.5", "at least 1"),
    ("reuse_limit:inf", "decimal number"),
    ("reuse_limit:1e3", "decimal number"),
    ("defrag_level:7", "0, 1 or 2"),
    ("defrag_level:-1", "integer"),
    ("handle_divisions:+4", "integer"),
    ("large_handle_divisions:-1", "integer"),
    ("stitching:maybe", "true/false"),
    ("vmmDefragment=on", "integer"),
    ("per_process_memory_fraction:1.5", "(0, 1]"),
    ("per_process_memory_fraction:0", "(0, 1]"),
    ("small_size:128MB", "at most 64 MiB"),
    ("peer_borrow:maybe", "peer_borrow"),
    ("max_handle_size:0", "positive"),
];

#[test]
fn accepted_inputs_set_what_they_say() {
    for (text, holds) in ACCEPTED {
        let c = Config::parse(text).unwrap_or_else(|e| panic!("`{text}` refused: {e}"));
        assert!(holds(&c), "`{text}` parsed to {c:?}");
    }
}

#[test]
fn refused_inputs_name_what_is_wrong_and_list_the_valid_keys() {
    for (text, word) in REFUSED {
        let e = Config::parse(text).expect_err(text);
        assert!(
            e.message.contains(word),
            "`{text}`: message `{}` lacks `{word}`",
            e.message
        );
        assert!(e.to_string().contains("valid keys"), "`{text}`");
    }
}
