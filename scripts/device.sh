#!/usr/bin/env bash
# The one script for the GPU machine (the `device` tool): builds kvq against the machine's
# LibTorch (CUDA) and the Debian-style libraries in /usr/include, runs the GPU-labelled tests and
# the benchmarks, and writes every log to $OUT (default: ./device-out).
#
# The shared models do not travel with the repository: copy what the run needs first, e.g.
#   mkdir -p .device-data/models .device-data/wikitext-2
#   cp -r ../shared/data/models/wt2-llama-1m ../shared/data/models/wt2-llama-18m .device-data/models/
#   cp ../shared/data/wikitext-2/wiki.{train,test}.tokens .device-data/wikitext-2/
# and carry .device-data (it is in .gitignore). The serve step needs cpp-httplib, which the GPU
# machine may lack (and cannot fetch): download its Debian packages here first, e.g.
#   mkdir -p .device-data/debs && (cd .device-data/debs && apt-get download libcpp-httplib0.11 \
#     libcpp-httplib-dev libssl-dev libbrotli-dev zlib1g-dev)
# (the H100 image of 2026-12-05 did not find cpp-httplib from the first two alone: its .pc
# requires openssl's, zlib's and brotli's; with all five the serve step builds and runs there,
# 2026-12-05; the configure step logs what is missing)
# and they are unpacked under build-gpu/deps (never into /). To time a change against its
# baseline in one call, carry the baseline's sources too and name them in KVQ_BASE_SRC, e.g.
#   mkdir -p .ab/main && git archive main -- . ':!tests' ':!fuzz' | tar -x -C .ab/main
#   KVQ_BASE_SRC=.ab/main scripts/device.sh kernels   # .ab in .git/info/exclude; carry it
# (a baseline builds kvq alone, configured without tests, so its tests/ and fuzz/ need not
# travel: 2.1 MB a tree instead of 4.5). The carry is 64 MiB in all: the kernel steps (test with
# KVQ_GPU_TESTS='^Kv', kernels, profile, sanitize) read the model directory alone, so leave
# wiki.train.tokens (10 MB) out of .device-data when several baselines travel with it.
# Usage: scripts/device.sh [STEP ...], steps (default: all of them, in this order):
#   test (the gpu-labelled tests), eval, runtime (kvq eval --runtime and kvq generate through the
#   compressed cache), reproduce, calibrate (7B-shaped bench), kernels (kvq bench kernels), e2e (kvq
#   bench e2e: 7B-shaped decode through the runtime), sanitize (compute-sanitizer memcheck +
#   racecheck on the kernel tests); `build` only builds. Not in the default list: serve (kvq serve
#   on wt2-llama-18m with the fp16 cache and nuq3-1%, kvq bench serve at 1, 8, 32, 64 streaming
#   clients: bench-serve-*.md/json; with KVQ_BASE_SRC its kvq serves the fp16 cache first,
#   bench-serve-fp16-base.md), profile (Nsight Compute of the decode kernels at MHA, batch 1,
#   128K tokens, v3 on nuq3-1% and v2 on kivi2-g32-r128: the summary sections and
#   bench/ncu_summary.py's opcode mix and stall lines, ncu-v*.txt / ncu-v*-summary.md).
# Environment, to fit a run into one device call: KVQ_TARGETS (build only these targets, e.g.
# "kvq gpu_test_kv_attention"), KVQ_GPU_TESTS (a ctest -R regex for the test step),
# KVQ_BENCH_ARGS (extra flags for kvq bench kernels, e.g. "--contexts 32768 --versions 3"),
# KVQ_E2E_ARGS (extra flags for kvq bench e2e, e.g. "--batches 8 --methods fp16,nuq3-1%"),
# KVQ_BASE_SRC (carried source trees, space-separated, to build as the kernels and e2e steps'
# same-call baselines; with several, stacked changes are compared one by one), KVQ_BENCH_ROUNDS
# (how many times the kernels step runs the trees in turn, default 1),
# KVQ_PROFILE_VERSIONS (what the profile step profiles in full, source counters included,
# default "2 3"; "append": the append of one token, MHA batch 1 at 32K, nuq3-1%; "probe": the
# score probe (kernels/kv_score_probe.h) where v3 would be; a v3 entry also gets its reduction
# timed beside it, both kernels serialized by ncu; any entry may
# name its case, "version:shape:method:batch:context", e.g. "3:gqa:nuq3-1%:1:131072" or
# "append:gqa:nuq3-1%:1:32768"), KVQ_PROFILE_CASES (further v3 cases, the summary sections
# only, "shape:method:batch[:context] ...", context 131072 unless named), KVQ_OUT_FILES (how many
# files to leave in $OUT, default 8, what the device tool brings back: the rest is packed into
# $OUT/logs.tar.gz on exit; 0 packs nothing), KVQ_NCU_SAMPLING (the source counters' PC
# sampling interval, ncu's --warp-sampling-interval 0..31: 2^(5+N) cycles; default auto, which
# leaves a kernel of a few microseconds such as the append with a few dozen samples),
# KVQ_PROFILE_TREES (the builds the profile step profiles, in order: "this", the working tree,
# by default, and baselines by their tags, "base", "base2", ...: e.g. "base2 this" profiles a
# change and the tree below it in one call).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
steps=" ${*:-test eval runtime reproduce calibrate kernels e2e sanitize} "
want() { [[ "$steps" == *" $1 "* ]]; }
data_dir=$PWD/.device-data
[ -d "$data_dir" ] || data_dir=$PWD/../shared/data

log() { echo "[device.sh $(date +%T)] $*" | tee -a "$OUT/summary.log"; }

# The device tool brings back at most 8 files from $OUT (in name order), so on exit the results
# that matter most stay as files and everything else goes into one archive, logs.tar.gz: the
# first 7 that exist of summary.log, the benchmark tables, the test log and the profile
# summaries; the JSON, the build logs and the rest in the archive (with what an earlier run into
# the same $OUT packed). KVQ_OUT_FILES (default 8) is that limit; 0 keeps every file as it is.
# shellcheck disable=SC2317  # run by the EXIT trap
pack_out() {
  local limit=${KVQ_OUT_FILES:-8}
  [ "$limit" -gt 0 ] || return 0
  # An earlier run into the same $OUT packed its rest already: unpack it, so that this run's
  # archive holds both.
  if [ -f "$OUT/logs.tar.gz" ]; then
    tar -xzf "$OUT/logs.tar.gz" -C "$OUT" && rm -f "$OUT/logs.tar.gz"
  fi
  local all=() f
  while IFS= read -r f; do
    all+=("$f")
  done < <(cd "$OUT" && find . -type f ! -name logs.tar.gz | sed 's|^\./||' | sort)
  [ "${#all[@]}" -le "$limit" ] && return 0
  local keep=() rest=() want_first=(summary.log bench-kernels-compare.md bench-kernels.md
    bench-e2e.md bench-e2e-base.md gpu-tests.log)
  for f in "${want_first[@]}"; do [ -f "$OUT/$f" ] && keep+=("$f"); done
  for f in "${all[@]}"; do [[ "$f" == ncu-*-summary.md ]] && keep+=("$f"); done
  keep=("${keep[@]:0:$((limit - 1))}")
  for f in "${all[@]}"; do [[ " ${keep[*]} " == *" $f "* ]] || rest+=("$f"); done
  (cd "$OUT" && tar -czf logs.tar.gz "${rest[@]}" && rm -f "${rest[@]}") \
    && find "$OUT" -mindepth 1 -type d -empty -delete \
    && echo "[device.sh] $OUT: ${#keep[@]} files kept, ${#rest[@]} packed into logs.tar.gz"
}
# The baseline builds running in the background (their process groups, below): on any exit,
# a failed build or a `timeout` around this script among them, they are stopped with it.
base_pids=()
# shellcheck disable=SC2317  # run by the EXIT trap
stop_bases() { local pid; for pid in "${base_pids[@]}"; do kill -- "-$pid" 2>/dev/null; done; }
trap 'stop_bases; pack_out' EXIT

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nvcc --version | tail -2
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} >"$OUT/machine.log" 2>&1
cat "$OUT/machine.log"

# cpp-httplib from carried packages when the machine has none (the .pc file's prefix moved).
deps=$PWD/build-gpu/deps
if ! pkg-config --exists cpp-httplib 2>/dev/null && ls "$data_dir"/debs/*.deb >/dev/null 2>&1; then
  mkdir -p "$deps"
  for d in "$data_dir"/debs/*.deb; do dpkg -x "$d" "$deps"; done
  for pc in "$deps"/usr/lib/*/pkgconfig/*.pc "$deps"/usr/share/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -i "s|^prefix=/usr|prefix=$deps/usr|" "$pc"
  done
  PKG_CONFIG_PATH=$(ls -d "$deps"/usr/lib/*/pkgconfig "$deps"/usr/share/pkgconfig 2>/dev/null | paste -sd:)
  export PKG_CONFIG_PATH
  # openssl's configuration.h sits in the multiarch include directory, which the compiler
  # searches under /usr only.
  for inc in "$deps"/usr/include/*-linux-gnu; do
    [ -d "$inc" ] && export CPATH="$inc${CPATH:+:$CPATH}"
  done
  # Its .pc requires openssl, zlib and brotli's: without their -dev packages it is not found.
  pkg-config --exists cpp-httplib \
    || log "cpp-httplib from $data_dir/debs not usable: $(pkg-config --print-errors --exists cpp-httplib 2>&1 | head -1)"
fi

torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
log "configure (LibTorch at $torch_prefix, data at $data_dir)"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DKVQ_DATA_DIR="$data_dir" >"$OUT/configure.log" 2>&1 \
  || { log "configure FAILED"; tail -30 "$OUT/configure.log"; exit 1; }
# KVQ_BASE_SRC: one or more further source trees, space-separated (e.g. `git archive main | tar
# -x -C .ab/main`, carried), built into build-gpu-base, build-gpu-base2, ... (kvq only), so that
# the kernels and e2e steps time them all in one call (the serve step uses the first alone);
# with two or more, the kernels step compares each tree with the one after it (the last base
# with this tree) and the first with this tree, so that stacked changes (main, main + A,
# main + A + B) are measured one by one in a single call.
# A warm machine keeps the build-gpu-base* folders between calls. Each starts afresh for another
# source path (CMake refuses a build directory configured for other sources). For the same path
# carried again with other contents, the files whose contents changed since its last build are
# touched first: `git archive` dates every file to its commit, older than the objects built from
# the tree before, so make would otherwise rebuild nothing and time the old baseline.
base_bins=()
build_base() {  # build_base SRC DIR JOBS: SRC's kvq into DIR (logs in $OUT); non-zero on failure
  local src dir=$2 jobs=$3 manifest touched
  src=$(cd "$1" && pwd) || return 1
  manifest=$dir/kvq-base-sources.sha1
  if [ -f "$dir/CMakeCache.txt" ] &&
     ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$dir/CMakeCache.txt"; then
    rm -rf "$dir"
  fi
  mkdir -p "$dir"
  (cd "$src" && find . -type f -print0 | sort -z | xargs -0 -r sha1sum) >"$manifest.new"
  if [ -f "$dir/CMakeCache.txt" ]; then
    # Lines of the new manifest not in the last one: files added or changed (all of them when
    # there is no last one).
    touched=$(comm -13 <(sort "$manifest" 2>/dev/null) <(sort "$manifest.new") |
      sed 's/^[0-9a-f]*  //')
    [ -z "$touched" ] || (cd "$src" && xargs -d '\n' touch -- <<<"$touched")
    log "baseline $1: $(grep -c . <<<"$touched") files changed since its last build"
  fi
  local tag=${dir#build-gpu-}
  # Without tests: only the baseline's kvq is built and run (its sources may lack tests/).
  cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_PREFIX_PATH="$torch_prefix" -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DKVQ_DATA_DIR="$data_dir" >"$OUT/configure-$tag.log" 2>&1 &&
    cmake --build "$dir" -j"$jobs" --target kvq >"$OUT/build-$tag.log" 2>&1 &&
    mv "$manifest.new" "$manifest"
}
# The trees build at once, the baselines in the background with half the jobs each, so that
# their largest CUDA files (v3's, one per bit width) compile side by side rather than one tree
# after another (three trees took 394 s one after another on the 16-core H100 machine).
# Each runs in its own process group (job control on while it starts), so that stop_bases
# stops its whole build, cmake, make and the compilers, not only the subshell that waits for
# them (nor does a `timeout` around this script, which signals its own group, reach them).
n_base=0 base_dirs=() base_srcs=()
for src in ${KVQ_BASE_SRC:-}; do
  n_base=$((n_base + 1))
  dir=build-gpu-base; [ "$n_base" -gt 1 ] && dir=build-gpu-base$n_base
  log "build the baseline tree $src into $dir (in the background)"
  set -m
  build_base "$src" "$dir" "$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))" &
  base_pids+=($!) base_dirs+=("$dir") base_srcs+=("$src")
  set +m
done
log "build"
targets=()
for t in ${KVQ_TARGETS:-}; do targets+=(--target "$t"); done
if ! cmake --build build-gpu -j"$(nproc)" "${targets[@]}" -- -k >"$OUT/build.log" 2>&1; then
  log "build FAILED"; grep -m20 -E 'error|Error' "$OUT/build.log"
  exit 1
fi
for i in "${!base_pids[@]}"; do
  dir=${base_dirs[$i]}
  if ! wait "${base_pids[$i]}"; then
    log "baseline build FAILED (${base_srcs[$i]})"; tail -20 "$OUT/build-${dir#build-gpu-}.log" 2>/dev/null
    exit 1
  fi
  base_bins+=("$dir/bin/kvq")
done
base_pids=()  # all done: nothing left to stop
log "builds done"
base_bin=${base_bins[0]:-}
[ "$steps" = " build " ] && exit 0

status=0
# `kvq bench KIND FLAGS...`: with baselines (KVQ_BASE_SRC) their binaries first, then this
# tree's, into bench-KIND-base.{md,json,err} (bench-KIND-base2..., one per further baseline) and
# bench-KIND.{md,json,err}; a failure sets status.
base_tags() {  # the file suffixes of the baselines, in order: -base -base2 ...
  local i
  for ((i = 1; i <= ${#base_bins[@]}; i++)); do
    if [ "$i" -eq 1 ]; then echo -base; else echo "-base$i"; fi
  done
}
# KVQ_BENCH_ROUNDS=N (kernels only, default 1): the trees run in turn N times (A B A B ...),
# rounds after the first into bench-kernels<tag>-rK.*, and the comparison takes each row's
# median and lists its ratio round by round (bench/kernels_compare.py).
bench_rounds() {
  local kind=$1 bin sfx i r n=1 name
  shift
  [ "$kind" = kernels ] && n=${KVQ_BENCH_ROUNDS:-1}
  for ((r = 1; r <= n; r++)); do
    i=0
    for sfx in $(base_tags) ""; do
      bin=build-gpu/bin/kvq
      [ -n "$sfx" ] && bin=${base_bins[$i]} && i=$((i + 1))
      name=bench-$kind$sfx
      [ "$r" -gt 1 ] && name=$name-r$r
      "$bin" bench "$kind" "$@" --json-file "$OUT/$name.json" >"$OUT/$name.md" 2>"$OUT/$name.err" \
        || { status=1; tail -5 "$OUT/$name.err"; }
    done
  done
}
runs_of() {  # runs_of TAG: the kernels step's JSON files of one tree, comma-separated
  local r list=$OUT/bench-kernels$1.json
  for ((r = 2; r <= ${KVQ_BENCH_ROUNDS:-1}; r++)); do list+=,$OUT/bench-kernels$1-r$r.json; done
  echo "$list"
}
if want test; then
  log "gpu tests"
  ctest --test-dir build-gpu -L gpu ${KVQ_GPU_TESTS:+-R "$KVQ_GPU_TESTS"} --output-on-failure \
    >"$OUT/gpu-tests.log" 2>&1 || status=1
  tail -15 "$OUT/gpu-tests.log"
fi
if want eval; then
  log "eval on cuda (wt2-llama-18m, wiki.test.tokens, L = 1024)"
  build-gpu/bin/kvq eval --model "$data_dir/models/wt2-llama-18m" \
    --data "$data_dir/wikitext-2/wiki.test.tokens" --device cuda --json --quiet \
    >"$OUT/eval-18m-cuda.json" 2>"$OUT/eval-18m-cuda.err" || status=1
  cat "$OUT/eval-18m-cuda.json" "$OUT/eval-18m-cuda.err"
fi
if want runtime; then
  # wt2-llama-18m: calibrate 16 x 1024 of wiki.train on the GPU, fit the methods the compressed
  # cache serves, then perplexity, KL and top-1 through the runtime on all of wiki.test beside
  # the fake-quantized figures of the same run, and one generation per method.
  log "runtime (wt2-llama-18m, cuda, fp16)"
  rt=$PWD/build-gpu/runtime-18m
  mkdir -p "$rt"
  m18="$data_dir/models/wt2-llama-18m"
  build-gpu/bin/kvq calibrate --model "$m18" --data "$data_dir/wikitext-2/wiki.train.tokens" \
    --device cuda --quiet --out "$rt/calib.h5" >"$OUT/runtime-calib.log" 2>&1 || status=1
  quants=()
  for method in nuq4-1% nuq3-1% nuq2-1% nuq3-1%-vhead kivi4-g32-r128 kivi2-g32-r128; do
    build-gpu/bin/kvq fit --method "$method" --calib "$rt/calib.h5" --model "$m18" \
      --out "$rt/$method.h5" >>"$OUT/runtime-calib.log" 2>&1 || status=1
    quants+=("$rt/$method.h5")
  done
  list=$(IFS=,; echo "${quants[*]}")
  build-gpu/bin/kvq eval --model "$m18" --data "$data_dir/wikitext-2/wiki.test.tokens" \
    --device cuda --dtype fp16 --quant "$list" --runtime --quiet \
    >"$OUT/runtime-eval-18m.md" 2>"$OUT/runtime-eval-18m.err" || status=1
  cat "$OUT/runtime-eval-18m.md"; tail -3 "$OUT/runtime-eval-18m.err"
  for q in "$rt/fp16" "$rt/nuq3-1%.h5"; do
    kv=(--quant "$q"); [ "$q" = "$rt/fp16" ] && kv=(--kv fp16)
    build-gpu/bin/kvq generate --model "$m18" --device cuda --dtype fp16 "${kv[@]}" \
      --prompt "The tower is" -n 200 --ignore-eos >>"$OUT/runtime-generate.log" 2>&1 || status=1
  done
  tail -12 "$OUT/runtime-generate.log"
fi
if want reproduce; then
  # The paper's table on wt2-llama-18m: calibrate 16 x 1024 of wiki.train, fit, eval wiki.test.
  log "reproduce (wt2-llama-18m, cuda)"
  build-gpu/bin/kvq reproduce --model "$data_dir/models/wt2-llama-18m" --device cuda --quiet \
    --train "$data_dir/wikitext-2/wiki.train.tokens" --data "$data_dir/wikitext-2/wiki.test.tokens" \
    --out-dir "$OUT/reproduce-18m" >"$OUT/reproduce-18m.md" 2>"$OUT/reproduce-18m.err" || status=1
  rm -f "$OUT/reproduce-18m/calib.h5"  # large; rebuilt by the command above
  cat "$OUT/reproduce-18m.md"; tail -3 "$OUT/reproduce-18m.err"
fi
if want calibrate; then
  # Calibration of a random-weight LLaMA-7B-shaped model, 16 x 2048, against bare fwd+bwd.
  log "bench calibrate (7B shapes)"
  build-gpu/bin/bench_calibrate --preset 7b --samples 16 --seq-len 2048 --device cuda --dtype bf16 \
    --fit-method nuq3-1% --calib-out "$PWD/build-gpu/bench-calib-7b.h5" \
    >"$OUT/bench-calibrate.md" 2>"$OUT/bench-calibrate.err" || status=1
  cat "$OUT/bench-calibrate.md"; tail -3 "$OUT/bench-calibrate.err"
fi
if want kernels; then
  # Decode attention from the compressed cache vs fp16 attention, one layer, same run
  # (bench/kernels_bench.cpp; bench/kernels_notes.md reads these numbers).
  log "bench kernels"
  # With a baseline, bench/kernels_compare.py sets each row beside it (bench-kernels-compare.md).
  # shellcheck disable=SC2086  # KVQ_BENCH_ARGS is a list of flags
  bench_rounds kernels ${KVQ_BENCH_ARGS:-}
  cat "$OUT/bench-kernels.md"
  if [ -n "$base_bin" ]; then
    # Each tree against the next (base -> base2 -> ... -> this tree), then the first against this
    # tree when there are several, all into bench-kernels-compare.md.
    mapfile -t tags < <(base_tags)
    tags+=("")
    pairs=()
    for ((i = 0; i + 1 < ${#tags[@]}; i++)); do pairs+=("${tags[i]}:${tags[i + 1]}"); done
    [ "${#tags[@]}" -gt 2 ] && pairs+=("-base:")
    : >"$OUT/bench-kernels-compare.md"
    for pair in "${pairs[@]}"; do
      python3 bench/kernels_compare.py "$(runs_of "${pair%%:*}")" "$(runs_of "${pair#*:}")" \
        >>"$OUT/bench-kernels-compare.md" || status=1
      echo >>"$OUT/bench-kernels-compare.md"
    done
    cat "$OUT/bench-kernels-compare.md"
  fi
fi
if want e2e; then
  # Whole decode steps of a random-weight LLaMA-7B-shaped model through the runtime: fp16 cache
  # vs nuq4/3/2-1% at batch 1 and 8, 4K..1M tokens, and each cache's largest context.
  log "bench e2e (7B shapes)"
  # shellcheck disable=SC2086  # KVQ_E2E_ARGS is a list of flags
  bench_rounds e2e ${KVQ_E2E_ARGS:-}
  [ -z "$base_bin" ] || cat "$OUT/bench-e2e-base.md"
  cat "$OUT/bench-e2e.md"
fi
if want serve; then
  # kvq serve on wt2-llama-18m (fp16 model on the GPU), the fp16 cache and nuq3-1% (fitted by the
  # runtime step, else here), each loaded by kvq bench serve at 1, 8, 32, 64 streaming clients.
  log "serve (wt2-llama-18m, cuda, fp16; kvq bench serve)"
  # The output first, then the test: under pipefail, `| grep -q` would take kvq's exit status.
  probe_out=$(build-gpu/bin/kvq serve --model x --kv fp16 2>&1)
  if [[ "$probe_out" == *"built without cpp-httplib"* ]]; then
    log "serve: SKIPPED, kvq was built without cpp-httplib (see this script's header)"; status=1
  else
    rt=$PWD/build-gpu/runtime-18m
    m18="$data_dir/models/wt2-llama-18m"
    mkdir -p "$rt"
    if [ ! -f "$rt/nuq3-1%.h5" ]; then
      build-gpu/bin/kvq calibrate --model "$m18" --data "$data_dir/wikitext-2/wiki.train.tokens" \
        --device cuda --quiet --out "$rt/calib.h5" >"$OUT/serve-calib.log" 2>&1 || status=1
      build-gpu/bin/kvq fit --method nuq3-1% --calib "$rt/calib.h5" --model "$m18" \
        --out "$rt/nuq3-1%.h5" >>"$OUT/serve-calib.log" 2>&1 || status=1
    fi
    # With a baseline (KVQ_BASE_SRC), its binary serves the fp16 cache first (fp16-base).
    runs=(fp16 nuq3-1%)
    [ -n "$base_bin" ] && runs=(fp16-base fp16 nuq3-1%)
    for run in "${runs[@]}"; do
      cache=${run%-base} bin=build-gpu/bin/kvq
      [ "$run" != "$cache" ] && bin=$base_bin
      kv=(--quant "$rt/$cache.h5"); [ "$cache" = fp16 ] && kv=(--kv fp16)
      tag=${run//%/pct}  # the device tool brings back no file with a % in its name
      err="$OUT/serve-$tag.log"
      "$bin" serve --model "$m18" --device cuda --dtype fp16 "${kv[@]}" --port 0 \
        --max-running 64 --max-queue 256 2>"$err" &
      pid=$!
      port=""
      for _ in $(seq 600); do  # the port is on the first line of the log (at most 60 s)
        port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$err" | head -1)
        [ -n "$port" ] && break; sleep 0.1
      done
      if [ -z "$port" ]; then
        log "serve $run: did not start"; cat "$err"; kill "$pid" 2>/dev/null; status=1; continue
      fi
      build-gpu/bin/kvq bench serve --url "http://127.0.0.1:$port" --concurrency 1,8,32,64 \
        --max-tokens 128 --json-file "$OUT/bench-serve-$tag.json" \
        >"$OUT/bench-serve-$tag.md" 2>>"$err" || status=1
      cat "$OUT/bench-serve-$tag.md"
      kill -TERM "$pid"; wait "$pid" || { log "serve $run: exit code $? after SIGTERM"; status=1; }
    done
  fi
fi
if want profile; then
  # KVQ_PROFILE_TREES (the header): a baseline's files take its tag (ncu-v3-...-base.txt).
  log "profile (ncu: ${KVQ_PROFILE_VERSIONS:-2 3}; cases ${KVQ_PROFILE_CASES:-none}; trees ${KVQ_PROFILE_TREES:-this})"
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  sections=(--section SpeedOfLight --section LaunchStats --section Occupancy --section SchedulerStats
            --section WarpStateStats --section MemoryWorkloadAnalysis)
  for tree in ${KVQ_PROFILE_TREES:-this}; do
    kvq=build-gpu/bin/kvq tsfx=
    if [ "$tree" != this ]; then
      n=${tree#base}; n=${n:-1} kvq=
      [[ "$tree" == base* && "$n" =~ ^[1-9][0-9]*$ ]] && kvq=${base_bins[$((n - 1))]:-}
      tsfx=-$tree
      [ -n "$kvq" ] || { log "profile: no build $tree (this, or base..base${#base_bins[@]})"; status=1; continue; }
    fi
    # KVQ_PROFILE_CASES: further v3 cases "shape:method:batch[:context]" (e.g. "gqa:nuq3-1%:1
    # mha:nuq3-1%:1:4096"), the summary sections and the instruction counts, one ncu run each
    # (ncu-<shape>-<method>-b<batch>-<context>.txt). KVQ_PROFILE_VERSIONS=" " (a space) profiles
    # these cases alone.
    for c in ${KVQ_PROFILE_CASES:-}; do
      IFS=: read -r cs cm cb cc <<<"$c"
      cc=${cc:-131072}
      "$ncu" --clock-control none -k "regex:kv_attention_v3" --launch-skip 1 --launch-count 1 \
        "${sections[@]}" --section InstructionStats "$kvq" bench kernels --contexts "$cc" \
        --batches "$cb" --methods "$cm" --shapes "$cs" --warmup 1 --repeats 1 --versions 3 \
        >"$OUT/ncu-$cs-${cm//%/pct}-b$cb-$cc$tsfx.txt" 2>&1 || status=1
    done
    for entry in ${KVQ_PROFILE_VERSIONS:-2 3}; do
      # v = append: the append of one token (bench kernels times it after two warm-ups).
      IFS=: read -r v ps pm pb pc <<<"$entry"
      k=kv_attention_v3 m=nuq3-1% ctx=131072 skip=1 ver=$v extra=()
      case "$v" in
        2) k=kv_attention_mma m=kivi2-g32-r128 ;;
        append) k=kv_append_kernel ctx=32768 skip=2 ver=3 ;;
        probe) k=kv_score_probe_kernel ver=3 extra=(--probe) ;;
      esac
      shape=${ps:-mha} m=${pm:-$m} batch=${pb:-1} ctx=${pc:-$ctx}
      name=v$v${ps:+-$shape-${m//%/pct}-b$batch-$ctx}$tsfx
      run_bench=("$kvq" bench kernels --contexts "$ctx" --batches "$batch" --methods "$m"
                 --shapes "$shape" --warmup 1 --repeats 1 --versions "$ver" "${extra[@]}")
      # --launch-skip: past the warm-up's launches.
      "$ncu" --clock-control none -k "regex:$k" --launch-skip "$skip" --launch-count 1 \
        "${sections[@]}" --section InstructionStats "${run_bench[@]}" >"$OUT/ncu-$name.txt" 2>&1 \
        || status=1
      "$ncu" --clock-control none -k "regex:$k" --launch-skip "$skip" --launch-count 1 \
        --section SourceCounters --section WarpStateStats --import-source yes -f -o "$OUT/ncu-$name" \
        ${KVQ_NCU_SAMPLING:+--warp-sampling-interval "$KVQ_NCU_SAMPLING"} \
        "${run_bench[@]}" >>"$OUT/ncu-$name.txt" 2>&1 || status=1
      if [ "$v" = 3 ]; then
        # The step's two kernels one by one (ncu serializes them): v3's and the reduction's
        # duration and warp instructions, past the warm-up's pair, beside the bench's step time.
        "$ncu" --clock-control none -k "regex:kv_attention_v3|kv_reduce" --launch-skip 2 \
          --launch-count 2 --metrics gpu__time_duration.sum,smsp__inst_executed.sum,sm__cycles_active.avg \
          "${run_bench[@]}" >>"$OUT/ncu-$name.txt" 2>&1 || status=1
        grep -E '^  [a-z_]+.*kv_(attention_v3|reduce)|gpu__time_duration|inst_executed|cycles_active' \
          "$OUT/ncu-$name.txt" | tail -8
      fi
      if [ "$v" = append ]; then
        # The duration of every launch with ncu's cache flush off: the first (nothing cached),
        # the second warm-up (its code and data just used) and the timed ones (after the bench's
        # own L2 flush): what the append's time owes to cold caches.
        "$ncu" --clock-control none --cache-control none -k "regex:$k" --launch-count 6 \
          --metrics gpu__time_duration.sum,smsp__inst_executed.sum "${run_bench[@]}" \
          >>"$OUT/ncu-$name.txt" 2>&1 || status=1
        grep -E 'kv_append_kernel|gpu__time_duration|inst_executed' "$OUT/ncu-$name.txt" | tail -18
      fi
      "$ncu" -i "$OUT/ncu-$name.ncu-rep" --page source --csv --print-source sass >"$OUT/ncu-$name-sass.csv" \
        && python3 bench/ncu_summary.py "$OUT/ncu-$name-sass.csv" >"$OUT/ncu-$name-summary.md" || status=1
      gzip -f "$OUT/ncu-$name-sass.csv"; rm -f "$OUT/ncu-$name.ncu-rep"
      head -40 "$OUT/ncu-$name-summary.md"
    done
  done
fi
# Sanitizers last: they are the slowest step and the benchmarks above matter more if time runs out.
if want sanitize; then
  if command -v compute-sanitizer >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for t in build-gpu/tests/gpu_test_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue  # ctest leaves *.cmake files beside the binaries
    case "$t" in *runner* | *runtime*) continue ;; esac  # LibTorch's allocator runs are not ours to sanitize
    for tool in memcheck racecheck; do
      # KVQ_SANITIZER: the kv tests run their small cases only (test_kv_*.cpp).
      KVQ_SANITIZER=1 "$san" --tool "$tool" --error-exitcode 9 "$t" >>"$OUT/sanitizer.log" 2>&1 \
        && log "compute-sanitizer $tool $(basename "$t"): clean" \
        || { log "compute-sanitizer $tool $(basename "$t"): FAILED"; status=1; }
    done
  done
fi
fi
log "done, status $status"
exit $status
