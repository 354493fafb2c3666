#!/usr/bin/env bash
# Installs kvq's build dependencies from Debian packages (if missing) and builds kvq into build/.
# Usage: scripts/setup.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."

# libopenblas0-openmp: Debian's libtorch calls the generic libblas.so.3, which is the reference
# BLAS unless an optimized provider is installed (measured: 15x slower matrix products).
# libcpp-httplib-dev: the HTTP/1.1 server and client of kvq serve and kvq bench serve.
packages=(cmake g++ make pkg-config libtorch-dev libhdf5-dev libcli11-dev libfmt-dev libgtest-dev
          libsentencepiece-dev nlohmann-json3-dev libcpp-httplib-dev libopenblas0-openmp)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
