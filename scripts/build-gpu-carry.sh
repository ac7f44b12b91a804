#!/usr/bin/env bash
# Builds, on a machine with Rust, what scripts/gpu-check.sh runs on the GPU machine (which has no
# Rust toolchain) into carry/ (git-ignored): the CUDA backend's test executable and libgmlake.so.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p carry
cargo build --release --locked -p gmlake-ffi-c
cp target/release/libgmlake.so carry/
exe=$(cargo test --release --locked -p gmlake-cuda --test gpu --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["executable"])')
cp "$exe" carry/gpu-tests
ls -la carry/
