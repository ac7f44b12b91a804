#!/usr/bin/env bash
# gmlake's checks on a GPU machine. Needs an NVIDIA GPU with driver, nvcc's CUDA headers and
# PyTorch (for the benchmark's peer); no Rust: the binaries come prebuilt in carry/
# (scripts/build-gpu-carry.sh). Full logs go to $OUT (default /tmp/gmlake-gpu); a table of results
# is printed at the end. Exit status: 0 when every check passed.
#
#   bash scripts/gpu-check.sh            # all checks
#   CHECKS="tests host costs examples python features corebench bench" bash scripts/gpu-check.sh
#   CHECKS="bench explain" bash scripts/gpu-check.sh   # also: where gmlake's time goes, call by call
#   CHECKS="features workloads" bash scripts/gpu-check.sh   # PyTorch's memory features, training runs
#   CHECKS="dynamic" bash scripts/gpu-check.sh   # long dynamic-shape runs, budget, generation, captured step
#   CHECKS="tests multigpu" bash scripts/gpu-check.sh   # on nvidia-h200-x2: torchrun DDP/FSDP2, peer borrowing
#   PACK_LOGS=1 bash scripts/gpu-check.sh > $OUT/gpu-check.txt   # logs as one $OUT/logs.tgz
# (the device tool brings back at most 8 files from $OUT; a full run writes more)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gmlake-gpu}
CHECKS=${CHECKS:-"tests host costs examples python features corebench bench"}
mkdir -p "$OUT"
export GMLAKE_TRACES=$PWD/traces
summary=()
failed=0

record() { # name status detail
  summary+=("$(printf '%-44s %-5s %s' "$1" "$2" "$3")")
  [ "$2" = PASS ] || failed=1
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

if [[ " $CHECKS " == *" tests "* ]]; then
  # The backend's tests, for real (they are ignored without a GPU).
  if [ -x carry/gpu-tests ]; then
    rm -f "$OUT/tests.results"
    carry/gpu-tests --include-ignored --test-threads=1 --nocapture --logfile "$OUT/tests.results" > "$OUT/tests.log" 2>&1
    status=$?
    # libtest's log file has one "ok NAME" / "failed NAME" / "ignored NAME" line per test.
    while read -r result name; do
      [ "$result" = ok ] && record "test $name" PASS "" || record "test $name" FAIL "$result"
    done < "$OUT/tests.results"
    grep -E '(replay [a-z0-9_/-]+|random): ' "$OUT/tests.log" | sed -E 's/^test [^ ]+ \.\.\. //' > "$OUT/replay-details.txt" || true
    grep -E '^  (gpt2|opt13|llama|held-out)' "$OUT/tests.log" >> "$OUT/replay-details.txt" || true
    [ $status -eq 0 ] || record "gpu-tests exit" FAIL "status $status"
  else
    record "gpu-tests" FAIL "carry/gpu-tests missing: run scripts/build-gpu-carry.sh"
  fi
  # Driver failures injected on the GPU: no handle, range, mapping or event may leak.
  if [ -x carry/gpu-fault-tests ]; then
    rm -f "$OUT/faults.results"
    carry/gpu-fault-tests --include-ignored --test-threads=1 --nocapture --logfile "$OUT/faults.results" > "$OUT/faults.log" 2>&1
    status=$?
    while read -r result name; do
      [ "$result" = ok ] && record "test $name" PASS "" || record "test $name" FAIL "$result"
    done < "$OUT/faults.results"
    grep -oE 'gpu faults: .*' "$OUT/faults.log" >> "$OUT/replay-details.txt" || true
    [ $status -eq 0 ] || record "gpu-fault-tests exit" FAIL "status $status"
  else
    record "gpu-fault-tests" FAIL "carry/gpu-fault-tests missing: run scripts/build-gpu-carry.sh"
  fi
fi

if [[ " $CHECKS " == *" host "* ]]; then
  # The three traces on host memory (memfd handles), every byte of every allocation written and
  # verified: needs about 32 GB of RAM per trace, which this machine has and a build machine may not.
  if [ -x carry/host-trace-tests ]; then
    rm -f "$OUT/host.results"
    GMLAKE_VERIFY_ALL_BYTES=1 carry/host-trace-tests --include-ignored --test-threads=1 --nocapture --logfile "$OUT/host.results" > "$OUT/host.log" 2>&1
    status=$?
    while read -r result name; do
      if grep -q "SKIPPED ${name%_on_host_memory}" "$OUT/host.log"; then
        record "host $name" SKIP "not enough RAM"
      elif [ "$result" = ok ]; then
        record "host $name" PASS ""
      else
        record "host $name" FAIL "$result"
      fi
    done < "$OUT/host.results"
    [ $status -eq 0 ] || record "host-trace-tests exit" FAIL "status $status"
  else
    record "host-trace-tests" FAIL "carry/host-trace-tests missing: run scripts/build-gpu-carry.sh"
  fi
fi

if [[ " $CHECKS " == *" costs "* ]]; then
  # Driver call costs at the sizes the traces use (bench/driver_costs.cpp).
  CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  if g++ -O2 -std=c++17 bench/driver_costs.cpp -o /tmp/gmlake-driver-costs -I"$CUDA_HOME/include" \
      -L"$CUDA_HOME/lib64" -lcudart -lcuda -Wl,-rpath,"$CUDA_HOME/lib64" > "$OUT/costs.log" 2>&1 &&
     /tmp/gmlake-driver-costs > "$OUT/costs.jsonl" 2>> "$OUT/costs.log"; then
    record "driver costs" PASS "$(wc -l < "$OUT/costs.jsonl") figures"
  else
    record "driver costs" FAIL "see costs.log"
  fi
fi

if [[ " $CHECKS " == *" examples "* ]]; then
  # The C, C++ and PyTorch-entry examples of the test suite, on the CUDA backend.
  : > "$OUT/examples.log"
  example() { # name, then the compile command; the binary is /tmp/gmlake-example-NAME
    name=$1; shift
    if "$@" -o "/tmp/gmlake-example-$name" >> "$OUT/examples.log" 2>&1 &&
       "/tmp/gmlake-example-$name" cuda >> "$OUT/examples.log" 2>&1; then
      record "example $name (cuda)" PASS ""
    else
      record "example $name (cuda)" FAIL "see examples.log"
    fi
  }
  example c gcc ffi-c/examples/basic.c -Iffi-c/include -Lcarry -lgmlake -Wl,-rpath,"$PWD/carry"
  example torch_entry g++ ffi-c/examples/torch_entry.cpp -Iffi-c/include -Lcarry -lgmlake -Wl,-rpath,"$PWD/carry"
  example cpp g++ -std=c++17 ffi-cpp/examples/basic.cpp -Iffi-cpp/include -Icarry/include carry/libgmlake_cpp.a -lpthread -ldl -lm
fi

install_wheel() { # the wheel in carry/ into /tmp/gmlake-site, once per run of this script
  [ -f /tmp/gmlake-site/.from-this-run-$$ ] && return 0
  rm -rf /tmp/gmlake-site
  python3 -m pip install -q --no-index --no-deps --target /tmp/gmlake-site carry/gmlake-*.whl >> "$OUT/wheel.log" 2>&1 &&
    touch /tmp/gmlake-site/.from-this-run-$$
}

if [[ " $CHECKS " == *" python "* ]]; then
  # The Python package's tests, GPU ones included, from the wheel in carry/.
  if install_wheel && PYTHONPATH=/tmp/gmlake-site python3 -m pytest -q -rs -p no:cacheprovider python/tests > "$OUT/python.log" 2>&1; then
    record "python package tests" PASS "$(tail -1 "$OUT/python.log")"
  else
    record "python package tests" FAIL "$(tail -1 "$OUT/python.log")"
  fi
fi

torch_script() { # check, script, output name, args...: runs a PyTorch script of scripts/ on the wheel
  local check=$1 script=$2 name=$3
  shift 3
  if install_wheel && FEATURE_ARTIFACTS=$OUT PYTHONPATH=/tmp/gmlake-site python3 "scripts/$script" "$@" > "$OUT/$name.txt" 2>&1; then
    record "$check" PASS "$name.txt"
  else
    record "$check" FAIL "see $name.txt"
  fi
}
# PyTorch's memory features under the native allocator and under gmlake (FEATURES names a subset).
[[ " $CHECKS " == *" features "* ]] && torch_script "torch features" torch_features.py features "$OUT/features.json" ${FEATURES:-}
# Training runs under native, expandable segments and both gmlake routes (WORKLOADS names a subset).
[[ " $CHECKS " == *" workloads "* ]] && torch_script "torch workloads" torch_workloads.py workloads "$OUT/workloads.json"
# Long dynamic-shape runs, a memory budget, generation and a captured training step (JOBS names a subset).
[[ " $CHECKS " == *" dynamic "* ]] && torch_script "torch dynamic" torch_dynamic.py dynamic "$OUT/dynamic.json" ${JOBS:-}
# Several GPUs: torchrun DDP and FSDP2 under each allocator, peer borrowing (skips on one GPU).
[[ " $CHECKS " == *" multigpu "* ]] && torch_script "torch multi-GPU" torch_multi_gpu.py multigpu "$OUT/multigpu.json"

if [[ " $CHECKS " == *" corebench "* ]]; then
  # The core's own cost per operation on the simulated device (replay/benches/replay.rs), here
  # because this host is quieter than a small build machine. Three runs.
  if [ -x carry/core-bench ]; then
    : > "$OUT/core-bench.log"
    ok=1
    for i in 1 2 3; do
      carry/core-bench --bench >> "$OUT/core-bench.log" 2>&1 || ok=0
    done
    if [ $ok = 1 ]; then
      record "core cost benchmark" PASS "core-bench.log"
    else
      record "core cost benchmark" FAIL "see core-bench.log"
    fi
  else
    record "core cost benchmark" FAIL "carry/core-bench missing: run scripts/build-gpu-carry.sh"
  fi
fi

if [[ " $CHECKS " == *" bench "* ]]; then
  TORCH=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)
  CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  BENCH=/tmp/gmlake-replay-bench
  if g++ -O2 -std=c++17 bench/replay_bench.cpp -o "$BENCH" \
      -I"$TORCH/include" -I"$CUDA_HOME/include" -Iffi-c/include \
      -L"$TORCH/lib" -lc10_cuda -lc10 -L"$CUDA_HOME/lib64" -lcudart -L"$PWD/carry" -lgmlake \
      -Wl,-rpath,"$TORCH/lib:$CUDA_HOME/lib64:$PWD/carry" > "$OUT/bench-build.log" 2>&1; then
    record "bench build" PASS ""
    : > "$OUT/bench.jsonl"
    # BENCH_ROUNDS rounds (default 3), each running every allocator once per trace, one process
    # per run, interleaved so that a slow moment of the machine does not fall on one allocator;
    # each run makes BENCH_PASSES passes (default 4: cold, warm, warm3, warm4). The table gives
    # the median over the rounds.
    # BENCH_TRACES: names of traces in traces/ or traces/held-out/ (default the three of traces/).
    BENCH_TRACES=${BENCH_TRACES:-"gpt2_train opt13_lora llama_generate"}
    for t in $BENCH_TRACES; do
      f=traces/$t.txt.gz
      [ -f "$f" ] || f=traces/held-out/$t.txt.gz
      gunzip -c "$f" > "/tmp/$t.txt"
    done
    for round in $(seq "${BENCH_ROUNDS:-3}"); do
      for t in $BENCH_TRACES; do
        for a in torch async gmlake gmlake-sim; do
          if "$BENCH" --allocator "$a" --passes "${BENCH_PASSES:-4}" "/tmp/$t.txt" >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log"; then
            [ "$round" = 1 ] && record "bench $t $a" PASS ""
          else
            record "bench $t $a round $round" FAIL "see bench.log"
          fi
        done
      done
    done
    if [[ " $CHECKS " == *" explain "* ]]; then
      # Where gmlake's time goes, call by call (slower than the timed passes above).
      for t in $BENCH_TRACES; do
        echo "== $t" >> "$OUT/explain.log"
        if "$BENCH" --allocator gmlake --explain 15 "/tmp/$t.txt" >> "$OUT/explain.log" 2>&1; then
          record "explain $t" PASS "explain.log"
        else
          record "explain $t" FAIL "see explain.log"
        fi
      done
    fi
  else
    record "bench build" FAIL "see bench-build.log"
  fi
fi

echo
echo "== gmlake GPU check: $(cat "$OUT/gpu.txt")"
printf '%s\n' "${summary[@]}"
if [ -s "$OUT/replay-details.txt" ]; then
  echo "-- replays on the GPU"
  grep -E '^(replay|random|gpu faults)' "$OUT/replay-details.txt"
fi
if [ -s "$OUT/host.log" ]; then
  echo "-- host-memory replays"
  grep -oE '(host replay|SKIPPED).*' "$OUT/host.log"
fi
if [ -s "$OUT/costs.jsonl" ]; then
  echo "-- driver costs (median us)"
  python3 - "$OUT/costs.jsonl" <<'PY'
import json, sys
for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip()):
    print(f"{r['call']:<20} {r['bytes']/2**20:>8.0f} MiB x{r['handles']:<2} {r['median_us']:>9.1f}")
PY
fi
for table in "features:feature :PyTorch features (scripts/torch_features.py)" \
             "workloads:workload :training runs (scripts/torch_workloads.py)"; do
  IFS=: read -r name head title <<< "$table"
  if [ -s "$OUT/$name.txt" ]; then
    echo "-- $title"
    grep -A40 "^$head" "$OUT/$name.txt"
  fi
done
if [ -s "${OUT}/core-bench.log" ]; then
  echo "-- core cost per operation, simulated device (ns; three runs)"
  grep -A3 '^trace ' "$OUT/core-bench.log" | grep -v '^--'
fi
if [ -s "${OUT}/bench.jsonl" ]; then
  echo "-- benchmark (median over rounds; driver ms: gmlake's time inside driver calls, estimated for gmlake-sim)"
  python3 - "$OUT/bench.jsonl" <<'PY'
import json, sys, statistics
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = defaultdict(list)
for r in rows:
    runs[(r['trace'], r['allocator'], r['pass'])].append(r)
med = lambda xs: statistics.median(xs)
print(f"{'trace':<20} {'allocator':<10} {'pass':<6} {'runs':>4} {'wall ms':>9} {'min-max':>13} {'driver ms':>9} {'x torch':>7} {'peak GB':>8} {'util':>7}")
for (t, a, p), rs in runs.items():
    wall = med([r['wall_ms'] for r in rs])
    drv = med([r.get('driver_ms', -1) for r in rs])
    torch = runs.get((t, 'torch', p))
    ratio = wall / med([r['wall_ms'] for r in torch]) if torch else float('nan')
    lo, hi = min(r['wall_ms'] for r in rs), max(r['wall_ms'] for r in rs)
    print(f"{t:<20} {a:<10} {p:<6} {len(rs):>4} {wall:>9.1f} {lo:>6.1f}-{hi:<6.1f} {drv:>9.2f} {ratio:>7.2f} {rs[0]['peak_reserved_bytes']/1e9:>8.2f} {rs[0]['utilization']:>7.4f}")
PY
fi
if [ "${PACK_LOGS:-0}" = 1 ]; then
  (cd "$OUT" && find . -maxdepth 1 -type f ! -name logs.tgz ! -name gpu-check.txt -printf '%P\n' |
    tar czf logs.tgz -T - --remove-files)
fi
exit $failed
