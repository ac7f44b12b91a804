//! libFuzzer target: decodes the input into a gmlake operation program and panics on the first
//! invariant violation (see `gmlake_fuzz::run_bytes`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = gmlake_fuzz::run_bytes(data) {
        panic!("invariant violated: {v}");
    }
});
