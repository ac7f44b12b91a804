//! Builds `libgmlake_cpp.a`, compiles `examples/basic.cpp` with the system C++ compiler against
//! `include/gmlake/gmlake.hpp` and the cxx-generated headers, and runs it on the simulated device.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_cpp_example_builds_and_passes() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap().to_path_buf();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "-p", "gmlake-ffi-cpp", "--lib"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(
        build.status().unwrap().success(),
        "cargo build -p gmlake-ffi-cpp failed"
    );
    let out = std::env::temp_dir().join(format!("gmlake-cpp-example-{}", std::process::id()));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let status = Command::new(&cxx)
        .arg("-std=c++17")
        .arg(crate_dir.join("examples/basic.cpp"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-I")
        .arg(target_dir.join("cxxbridge"))
        .arg(profile_dir.join("libgmlake_cpp.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out)
        .status()
        .expect("a C++ compiler");
    assert!(status.success(), "{cxx} failed on examples/basic.cpp");
    let run = Command::new(&out).output().unwrap();
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success() && stdout.contains("cpp example: ok"),
        "{stdout}{stderr}"
    );
}
