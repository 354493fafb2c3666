#!/usr/bin/env bash
# The sanitizer build: everything that needs no LibTorch and no CUDA (kvq_quant, kvq_core, the
# method strings, the serve wire format), their unit tests and the fuzz targets of fuzz/, built by
# clang 14 with -fsanitize=address,undefined -fno-sanitize-recover=undefined (plus libFuzzer's
# coverage) into build-san/, then the tests run (-L unit: the unit tests and the fuzz targets'
# regression inputs). Any ASan/UBSan/LeakSanitizer report fails its test. Installs clang-14 and
# libclang-rt-14-dev if missing; uses ccache when there is one. GNU ld links it (KVQ_FAST_LINKER
# off): gold, which the main build takes where lld is missing, warns thousands of times about
# ASan's local symbols.
#
# Usage: scripts/sanitize.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang++-14 >/dev/null 2>&1 || ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed"; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "sanitize: installing clang-14 libclang-rt-14-dev" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang-14 libclang-rt-14-dev >/dev/null
fi
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
cmake -S . -B build-san -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVQ_TORCH=OFF -DKVQ_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 "${launcher[@]}" \
  -DKVQ_FAST_LINKER=OFF \
  -DCMAKE_CXX_FLAGS="$san -fsanitize=fuzzer-no-link" -DCMAKE_EXE_LINKER_FLAGS="$san" "$@" >/dev/null
cmake --build build-san -j"$(nproc)"
# Checksum64.AtLeast3GBPerSecond states a speed, which ASan's instrumentation does not keep.
ctest --test-dir build-san -L unit -E '^Checksum64\.AtLeast3GBPerSecond$' --output-on-failure -j"$(nproc)"
