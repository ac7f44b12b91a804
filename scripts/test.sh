#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace's (`cargo test --workspace`), then the Python
# package's: a manylinux wheel built with maturin, installed in a fresh virtual environment and
# tested there with no cargo on PATH (what a user without Rust gets; pytest). GPU tests are
# skipped with a reason where there is no GPU (scripts/gpu-check.sh runs them).
# Ends with one line: "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
venv=$(mktemp -d)
build_venv=$(mktemp -d)
wheels=$(mktemp -d)
trap 'rm -rf "$log" "$venv" "$build_venv" "$wheels"' EXIT

cargo test --workspace --locked 2>&1 | tee "$log"

python3 -m venv "$build_venv"
"$build_venv/bin/pip" install --quiet --upgrade pip "maturin>=1.9.4,<2"
# manylinux_2_34: glibc 2.34 or later (Ubuntu 22.04, Debian 12, RHEL 9 and newer); libstdc++ stays
# the system's, so that C++ exceptions cross into PyTorch (docs/design.md, "A wheel without Rust").
"$build_venv/bin/maturin" build --profile dist --locked --compatibility manylinux_2_34 -o "$wheels"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "$wheels"/gmlake-*-manylinux_2_34_x86_64.whl pytest
no_rust_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -e cargo -e rustup | paste -sd: -)
if PATH="$no_rust_path" command -v cargo >/dev/null; then
  echo "cargo is still on PATH: the wheel's tests would not show that it needs no Rust" >&2
  exit 1
fi
PATH="$no_rust_path" "$venv/bin/python" -m pytest -q -rs python/tests 2>&1 | tee -a "$log"

summary=$(awk '
  /^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  / in [0-9.]+s/ && !/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  END { printf "%d passed, %d failed", p, f }' "$log")
echo "tests: ${summary}"
