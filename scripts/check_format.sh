#!/usr/bin/env bash
# Checks that every C++/CUDA source of the tree follows .clang-format (clang-format 14, Debian's).
# Usage: scripts/check_format.sh [--fix]   (--fix rewrites the files in place)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check_format: clang-format not found (apt-get install clang-format)" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')
if [ "${1:-}" = --fix ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "check_format: $f does not follow .clang-format (scripts/check_format.sh --fix)"
    bad=$((bad + 1))
  fi
done
[ "$bad" -eq 0 ] || { echo "check_format: $bad of ${#files[@]} files need formatting" >&2; exit 1; }
echo "check_format: ${#files[@]} files follow .clang-format"
