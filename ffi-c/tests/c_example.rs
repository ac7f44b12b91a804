//! Builds `libgmlake.a`, compiles `examples/basic.c` with the system C compiler against it and the
//! committed header only, and runs it: the program exercises the API and every bad input.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_c_example_builds_against_the_header_and_passes() {
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
    let out = std::env::temp_dir().join(format!("gmlake-c-example-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .arg(crate_dir.join("examples/basic.c"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out)
        .status()
        .expect("a C compiler");
    assert!(status.success(), "{cc} failed on examples/basic.c");
    let run = Command::new(&out).output().unwrap();
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success() && stdout.contains("c example: ok"),
        "{stdout}{stderr}"
    );
}
