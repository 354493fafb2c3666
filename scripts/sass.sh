#!/usr/bin/env bash
# The SASS of one kernel file, without a GPU: compiles FILE.cu for sm_90 with the build's flags
# (build/kernels must be configured), prints ptxas's registers, spills and shared memory per
# kernel, writes the disassembly (with source lines) to OUT.sass, and with --kernel REGEX lists
# that kernel's global loads and how many instructions later each result is first used
# (scripts/sass_loads.py): a load used a few instructions later is a round trip the warp waits
# out. bench/kernels_notes.md has what this found.
#
#   scripts/sass.sh kernels/kv_append.cu /tmp/append [--kernel 'kv_append_kernelILi128ELi3ELb0']
#
# nvdisasm: $NVDISASM, else the one on PATH or in /usr/local/cuda/bin (the GPU machine's CUDA
# has it). This machine's CUDA 13 lacks it; Debian's nvidia-cuda-toolkit 11.8 (non-free) has
# one that reads sm_90 code, unpacked without installing:
#   apt-get download nvidia-cuda-toolkit && dpkg -x nvidia-cuda-toolkit_*.deb /opt/cuda118
#   export NVDISASM=/opt/cuda118/usr/bin/nvdisasm
# (needs `Components: main contrib non-free` for bookworm in /etc/apt/sources.list.d). CUDA 13
# cubins carry a newer ELF ABI in the header than 11.8 reads; for such an nvdisasm a copy of
# the cubin gets the old header fields (OS/ABI 0x33, ABI version 7, e_flags for sm_90). The
# instructions are untouched; the disassembly is for reading, not for reassembling.
set -euo pipefail
usage() { echo "usage: scripts/sass.sh FILE.cu OUT_PREFIX [--kernel REGEX]" >&2; exit 2; }
[ $# -ge 2 ] || usage
src=$(realpath "$1")
out=$(realpath -m "$2")
kernel=
if [ $# -ge 3 ]; then
  [ "$3" = --kernel ] && [ $# -eq 4 ] || usage
  kernel=$4
fi
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}
rsp=$build/kernels/CMakeFiles/kvq_kernels.dir/includes_CUDA.rsp
[ -f "$src" ] || { echo "sass.sh: $1: no such file" >&2; exit 1; }
[ -f "$rsp" ] || { echo "sass.sh: $rsp missing: configure $build first (cmake -S . -B build)" >&2; exit 1; }
dis=${NVDISASM:-$(command -v nvdisasm || echo /usr/local/cuda/bin/nvdisasm)}
[ -x "$dis" ] || { echo "sass.sh: no nvdisasm (set NVDISASM; see this script's header)" >&2; exit 1; }
nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
mkdir -p "$(dirname "$out")"

# The flags CMake gives kvq_kernels (Release), one architecture.
(cd "$build/kernels" && "$nvcc" -forward-unknown-to-host-compiler --options-file "$rsp" -O3 \
  -DNDEBUG -arch=sm_90 -cubin -lineinfo --expt-relaxed-constexpr -std=c++17 -Xptxas -v \
  -x cu "$src" -o "$out.cubin") 2>"$out.ptxas" || { cat "$out.ptxas" >&2; exit 1; }
# ptxas -v: one line per kernel (its mangled name shortened to the template arguments).
awk '/Compiling entry function/ { match($0, /_Z[^'"'"']*/); name = substr($0, RSTART, RLENGTH) }
     /bytes spill stores/ { spill = $0; sub(/^.*ptxas info *: */, "", spill) }
     /Used [0-9]+ registers/ { used = $0; sub(/^.*ptxas info *: */, "", used);
       if (name != "") printf "%s\n    %s; %s\n", name, used, spill; name = "" }' "$out.ptxas"

if ! "$dis" -c -g "$out.cubin" >"$out.sass" 2>"$out.dis.err"; then
  if grep -q "does not contain Cuda architecture information" "$out.dis.err"; then
    python3 - "$out.cubin" "$out.old.cubin" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
assert d[:4] == b"\x7fELF", "not an ELF file"
d[7], d[8] = 0x33, 7                      # EI_OSABI CUDA, EI_ABIVERSION 7 (CUDA 11 layout)
struct.pack_into("<I", d, 0x30, 0x5A055A)  # e_flags: sm_90, virtual sm_90, 64-bit addresses
open(sys.argv[2], "wb").write(d)
PY
    "$dis" -c -g "$out.old.cubin" >"$out.sass"
  else
    cat "$out.dis.err" >&2
    exit 1
  fi
fi
echo "sass.sh: $(grep -c '^        /\*' "$out.sass") instructions in $out.sass"
if [ -n "$kernel" ]; then
  python3 "$root/scripts/sass_loads.py" "$out.sass" --kernel "$kernel"
fi
