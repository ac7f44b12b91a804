#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace's (`cargo test --workspace`), then the Python
# package's in a fresh virtual environment (`pip install .` builds it with maturin; pytest). GPU
# tests are skipped with a reason where there is no GPU (scripts/gpu-check.sh runs them).
# Ends with one line: "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
venv=$(mktemp -d)
trap 'rm -rf "$log" "$venv"' EXIT

cargo test --workspace --locked 2>&1 | tee "$log"

python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet . pytest
"$venv/bin/python" -m pytest -q -rs python/tests 2>&1 | tee -a "$log"

summary=$(awk '
  /^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  / in [0-9.]+s/ && !/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  END { printf "%d passed, %d failed", p, f }' "$log")
echo "tests: ${summary}"
