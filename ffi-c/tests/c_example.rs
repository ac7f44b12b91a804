//! Builds `libgmlake.a`, compiles `examples/basic.c` with the system C compiler (and
//! `examples/torch_entry.cpp` with the C++ compiler) against it and the committed header only, and
//! runs them: the programs exercise the API, every bad input, and PyTorch's entry points.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_c_and_cpp_examples_build_against_the_header_and_pass() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The test binary lives in <target>/<profile>/deps; the static library goes to <target>/<profile>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "-p", "gmlake-ffi-c", "--lib"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("cargo");
    assert!(status.success(), "cargo build -p gmlake-ffi-c failed");
    let lib = profile_dir.join("libgmlake.a");
    assert!(lib.exists(), "{} missing", lib.display());
    let run = |compiler: &str, source: &str, expect: &str| {
        let out = std::env::temp_dir().join(format!("gmlake-{source}-{}", std::process::id()));
        let status = Command::new(compiler)
            .arg(crate_dir.join("examples").join(source))
            .arg("-I")
            .arg(crate_dir.join("include"))
            .arg(&lib)
            .args(["-lstdc++", "-lpthread", "-ldl", "-lm", "-o"])
            .arg(&out)
            .status()
            .unwrap_or_else(|e| panic!("{compiler}: {e}"));
        assert!(status.success(), "{compiler} failed on examples/{source}");
        let run = Command::new(&out).output().unwrap();
        let _ = std::fs::remove_file(&out);
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.success() && stdout.contains(expect),
            "{stdout}{stderr}"
        );
    };
    run(
        &std::env::var("CC").unwrap_or_else(|_| "cc".to_string()),
        "basic.c",
        "c example: ok",
    );
    run(
        &std::env::var("CXX").unwrap_or_else(|_| "c++".to_string()),
        "torch_entry.cpp",
        "torch entry: ok",
    );
}
