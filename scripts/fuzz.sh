#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ (or those named) for SECONDS each, as many at a time as
# there are cores, from seed corpora made afresh: fuzz_make_seeds over KVQ_DATA_DIR, the committed
# fuzz/seeds/<name>/, the target's fuzz/regressions/<name>/, and a calib.h5 from a tiny real
# calibration when the LibTorch build's kvq exists (build/bin/kvq, or $KVQ_BIN). Limits: 2 GB of
# RSS, 10 s per input. Prints one line per target (runs, execs/s, corpus size); a crash, leak,
# ASan/UBSan report, timeout or OOM fails the run, and its input and log are kept in
# fuzz-findings/<name>/ (copy the input to fuzz/regressions/<name>/ once fixed). HDF5 inputs are
# read in a forked child first, by the readers' own code (h5.h, read_isolated): a fault of libhdf5
# 1.10 there (the child's sanitizer report is printed in the log) refuses the input, as the
# release build does; a fault of kvq's code there aborts the fuzzing process, and any fault in the
# fuzzing process itself, libhdf5's included, is a finding.
# Needs the sanitizer build (scripts/sanitize.sh, which leaves build-san/).
#
# Usage: scripts/fuzz.sh [SECONDS (default 60)] [NAME ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
build=${KVQ_SAN_BUILD:-build-san}
data=${KVQ_DATA_DIR:-$(pwd)/../shared/data}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors config checkpoint tokenizer text calib_h5 method serve_request)
fi
for t in "${targets[@]}"; do
  [ -x "$build/fuzz/fuzz_$t" ] || { echo "fuzz: $build/fuzz/fuzz_$t not built (run scripts/sanitize.sh)" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/kvq-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$build/fuzz/fuzz_make_seeds" "$work/seeds" "$data"
kvq=${KVQ_BIN:-build/bin/kvq}
if [ -x "$kvq" ] && [ -d "$data/models/wt2-llama-1m" ]; then
  mkdir -p "$work/seeds/calib_h5"
  "$kvq" calibrate --model "$data/models/wt2-llama-1m" --data "$data/wikitext-2/wiki.valid.tokens" \
    --samples 1 --seq-len 32 --key-bins 16 --value-bins 16 --sample-tokens 8 --quiet \
    --out "$work/seeds/calib_h5/wt2-llama-1m-calib.h5" >/dev/null
else
  echo "fuzz: no $kvq: calib_h5 starts without a real calib.h5" >&2
fi

# run_one NAME: fuzzes one target; its log in $work/NAME.log, its exit code in $work/NAME.rc.
run_one() {
  local t=$1 corpus=$work/corpus/$1
  mkdir -p "$corpus" "$work/artifacts/$t"
  for d in "$work/seeds/$t" "fuzz/seeds/$t" "fuzz/regressions/$t"; do
    if [ -d "$d" ]; then cp -r "$d/." "$corpus/"; fi
  done
  local rc=0
  "$build/fuzz/fuzz_$t" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/$t/" >"$work/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$work/$t.rc"
}

# fuzz/lsan.supp: leaks inside libhdf5 on corrupt files (HDF5's, not kvq's; see the file).
# allocator_may_return_null: a request past ASan's 1 TB maximum returns NULL, as glibc's malloc
# does (HDF5 then reports "memory allocation failed", kvq a one-line error), instead of aborting;
# any single allocation of 2 GB or more is still a finding (-malloc_limit_mb = -rss_limit_mb).
export LSAN_OPTIONS="suppressions=$(pwd)/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# quarantine_size_mb: File::open_image forks a child per HDF5 input (h5.cpp, vet_file), whose cost
# grows with the parent's resident memory; a 64 MB quarantine (256 by default) keeps fuzz_calib_h5
# near 60 inputs/s instead of 35 and still catches use-after-free of recent frees.
export ASAN_OPTIONS="allocator_may_return_null=1:quarantine_size_mb=64${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
jobs_max=$(nproc)
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  run_one "$t" &
done
wait

# The innermost frame of the last report's stack (children of run_isolated print theirs earlier in
# the log) that is not the sanitizer's (its interceptors, such as strdup, print as a libc name in
# the fuzzer's binary), libFuzzer's, libc's (its string functions are symbolized by their source
# under sysdeps/) or an allocator's: where the fault is. h5.cpp's blames_kvq passes over nearly
# the same frames (every frame neither libhdf5's nor in kvq's sources): change both together.
first_frame() {
  awk '/ERROR: /{on=1; found=""} on && !found && /^ *#[0-9]+ / {
         if ($0 ~ /__interceptor_|__sanitizer|fuzzer::|libc\.so|__libc_|sysdeps\/| in __(mem|str)[a-z_0-9]+ | in (mem|str)[a-z]+ \(| in (malloc|calloc|realloc|free|operator new|operator delete)|H5MM_/) next
         found=$0 }
       END { if (found) print found }' "$1"
}

failed=0
for t in "${targets[@]}"; do
  log=$work/$t.log rc=$(cat "$work/$t.rc")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  files=$(find "$work/corpus/$t" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    echo "fuzz_$t: ${seconds} s, ${runs:-?} runs, ${rate:-?} execs/s, corpus $files files: no finding"
  else
    mkdir -p "fuzz-findings/$t"
    cp "$log" "fuzz-findings/$t/"
    cp "$work/artifacts/$t/"* "fuzz-findings/$t/" 2>/dev/null || true
    failed=1
    where=$(first_frame "$log" | sed -E 's/^ *#[0-9]+ 0x[0-9a-f]+ in //' | cut -c1-120)
    echo "fuzz_$t: FINDING (exit $rc) after ${runs:-?} runs${where:+, in $where}; log and input in fuzz-findings/$t/:"
    grep -m3 -E 'ERROR: |runtime error:|SUMMARY:|property failed|terminate called|what\(\)' "$log" | sed 's/^/  /' || true
  fi
done
exit "$failed"
