#!/usr/bin/env bash
# Builds, on a machine with Rust, what scripts/gpu-check.sh runs on the GPU machine (which has no
# Rust toolchain) into carry/ (git-ignored): the CUDA backend's test executable, libgmlake.so, and
# libgmlake_cpp.a with the cxx headers for the C++ example.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p carry/include/rust carry/include/gmlake-ffi-cpp/src
cargo build --release --locked -p gmlake-ffi-c -p gmlake-ffi-cpp
strip --strip-debug -o carry/libgmlake.so target/release/libgmlake.so
strip --strip-debug -o carry/libgmlake_cpp.a target/release/libgmlake_cpp.a
cp -L target/cxxbridge/rust/cxx.h carry/include/rust/
cp -L target/cxxbridge/gmlake-ffi-cpp/src/lib.rs.h carry/include/gmlake-ffi-cpp/src/
test_exe() { # package, test target: prints the path of its release test executable
  cargo test --release --locked -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2"
}
strip --strip-debug -o carry/gpu-tests "$(test_exe gmlake-cuda gpu)"
# Driver failures injected on the GPU (tests/tests/gpu_faults.rs).
strip --strip-debug -o carry/gpu-fault-tests "$(test_exe gmlake-tests gpu_faults)"
# The host-memory trace replays, which need more RAM than a small build machine has.
strip --strip-debug -o carry/host-trace-tests "$(test_exe gmlake-host trace_bytes)"
# The core's cost benchmark (replay/benches/replay.rs), to run on the GPU machine's quieter host.
bench_exe=$(cargo bench --locked -p gmlake-replay --bench replay --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "replay":
        print(m["executable"])')
strip --strip-debug -o carry/core-bench "$bench_exe"
# The Python package's wheel (abi3), built with maturin through pip.
rm -f carry/gmlake-*.whl
venv=$(mktemp -d) && python3 -m venv "$venv" && "$venv/bin/pip" install -q --upgrade pip && "$venv/bin/pip" wheel -q --no-deps -w carry/ . && rm -rf "$venv"
du -sh carry/ && ls -la carry/
