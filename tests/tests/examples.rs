//! The C and C++ examples, built against the committed headers and the static libraries only,
//! and run: `ffi-c/examples/basic.c` (the API, every bad input, sharing, pools, history) and
//! `ffi-c/examples/torch_entry.cpp` (PyTorch's entry points) against `libgmlake.a`;
//! `ffi-cpp/examples/basic.cpp` against `libgmlake_cpp.a` and the cxx-generated headers. And the
//! installed package serves C users without cargo: `scripts/install.sh PREFIX --from DIR`, then
//! `basic.c` built with pkg-config (static and shared library) and, where CMake is installed (CI
//! installs it), with `find_package(gmlake)`; the README's C program built by its own command line.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target's profile folder (where the static libraries go), the libraries of `packages`
/// built there first.
fn build(packages: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let mut build = Command::new(env!("CARGO"));
    build.arg("build").arg("--lib");
    for p in packages {
        build.args(["-p", p]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(
        build.status().unwrap().success(),
        "cargo build {packages:?} failed"
    );
    profile_dir
}

/// Compiles `source` with `compiler` and `args`, runs it, and checks that it succeeded and printed
/// `expect`.
fn compile_and_run(
    compiler: &str,
    source: &Path,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    expect: &str,
) {
    let name = source.file_name().unwrap().to_string_lossy();
    let out = std::env::temp_dir().join(format!("gmlake-{name}-{}", std::process::id()));
    let mut cc = Command::new(compiler);
    cc.arg(source);
    for a in args {
        cc.arg(a);
    }
    let status = cc
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("{compiler}: {e}"));
    assert!(
        status.success(),
        "{compiler} failed on {}",
        source.display()
    );
    let run = Command::new(&out).output().unwrap();
    let _ = std::fs::remove_file(&out);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(
        run.status.success() && stdout.contains(expect),
        "{stdout}{stderr}"
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_c_examples_build_against_the_header_and_pass() {
    let lib = build(&["gmlake-ffi-c"]).join("libgmlake.a");
    let include = repo().join("ffi-c/include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let args: [&dyn AsRef<std::ffi::OsStr>; 7] = [
        &"-I",
        &include,
        &lib,
        &"-lstdc++",
        &"-lpthread",
        &"-ldl",
        &"-lm",
    ];
    compile_and_run(
        &cc,
        &repo().join("ffi-c/examples/basic.c"),
        &args,
        "c example: ok",
    );
    compile_and_run(
        &cxx,
        &repo().join("ffi-c/examples/torch_entry.cpp"),
        &args,
        "torch entry: ok",
    );
}

#[test]
fn the_cpp_example_builds_and_passes() {
    let profile = build(&["gmlake-ffi-cpp"]);
    let cxxbridge = profile.parent().unwrap().join("cxxbridge");
    let (include, lib) = (
        repo().join("ffi-cpp/include"),
        profile.join("libgmlake_cpp.a"),
    );
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let args: [&dyn AsRef<std::ffi::OsStr>; 9] = [
        &"-std=c++17",
        &"-I",
        &include,
        &"-I",
        &cxxbridge,
        &lib,
        &"-lpthread",
        &"-ldl",
        &"-lm",
    ];
    compile_and_run(
        &cxx,
        &repo().join("ffi-cpp/examples/basic.cpp"),
        &args,
        "cpp example: ok",
    );
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn the_installed_package_builds_the_c_example_with_pkg_config_and_cmake() {
    let repo = repo();
    let lib_dir = build(&["gmlake-ffi-c", "gmlake-ffi-cpp"]);
    let tmp = std::env::temp_dir().join(format!("gmlake-package-{}", std::process::id()));
    let prefix = tmp.join("prefix");
    run_ok(
        Command::new("bash")
            .arg(repo.join("scripts/install.sh"))
            .arg(&prefix)
            .arg("--from")
            .arg(&lib_dir),
        "scripts/install.sh",
    );
    for f in [
        "lib/libgmlake.a",
        "include/gmlake.h",
        "lib/pkgconfig/gmlake.pc",
        "lib/cmake/gmlake/gmlakeConfig.cmake",
    ] {
        assert!(prefix.join(f).exists(), "{f} not installed");
    }
    // pkg-config, for the static and the shared library; each binary runs with no
    // LD_LIBRARY_PATH.
    for (package, static_only) in [("gmlake", true), ("gmlake-shared", false)] {
        let flags = run_ok(
            Command::new("pkg-config")
                .args(["--cflags", "--libs", "--static", package])
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
            "pkg-config",
        );
        let exe = tmp.join(format!("basic-{package}"));
        run_ok(
            Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
                .arg(repo.join("ffi-c/examples/basic.c"))
                .arg("-o")
                .arg(&exe)
                .args(flags.split_whitespace()),
            "cc with pkg-config flags",
        );
        let run = run_ok(
            Command::new(&exe).env_remove("LD_LIBRARY_PATH"),
            "the pkg-config build",
        );
        assert!(run.contains("c example: ok"), "{package}: {run}");
        let needs = run_ok(Command::new("ldd").arg(&exe), "ldd");
        assert_eq!(
            !needs.contains("libgmlake.so"),
            static_only,
            "{package}: {needs}"
        );
    }
    // The README's C program, built by the README's own command line (its prefix replaced by
    // this test's); it runs, and where there is no GPU it says why and exits 1.
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let program = readme
        .split("```c\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a C block in the README");
    let line = readme
        .lines()
        .find(|l| l.starts_with("cc app.c $(PKG_CONFIG_PATH="))
        .expect("the README's cc line");
    std::fs::write(tmp.join("app.c"), program).unwrap();
    run_ok(
        Command::new("bash")
            .arg("-c")
            .arg(format!("{line} -o app").replace("/opt/gmlake", prefix.to_str().unwrap()))
            .current_dir(&tmp),
        "the README's cc line",
    );
    let out = Command::new(tmp.join("app"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            || (out.status.code() == Some(1) && said.contains("gmlake_create_cuda")),
        "the README's C program: {:?} {said}",
        out.status
    );
    // CMake.
    if Command::new("cmake")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let build = tmp.join("cmake-build");
        run_ok(
            Command::new("cmake")
                .arg("-S")
                .arg(repo.join("ffi-c/examples/cmake"))
                .arg("-B")
                .arg(&build)
                .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())),
            "cmake configure",
        );
        run_ok(
            Command::new("cmake").arg("--build").arg(&build),
            "cmake build",
        );
        assert!(
            run_ok(&mut Command::new(build.join("basic")), "the CMake build")
                .contains("c example: ok")
        );
    } else {
        eprintln!(
            "cmake not installed: the CMake half of this test was skipped (CI installs cmake)"
        );
    }
    let _ = std::fs::remove_dir_all(Path::new(&tmp));
}
