//! `include/gmlake.h` is generated from the Rust sources by cbindgen; this test fails when the
//! committed header is stale. `GMLAKE_BLESS=1 cargo test -p gmlake-ffi-c --test header` rewrites it.

use std::path::PathBuf;

#[test]
fn committed_header_matches_the_sources() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen")
        .write(&mut generated);
    let path = crate_dir.join("include/gmlake.h");
    if std::env::var_os("GMLAKE_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/gmlake.h is stale: run GMLAKE_BLESS=1 cargo test -p gmlake-ffi-c --test header"
    );
}
