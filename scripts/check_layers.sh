#!/usr/bin/env bash
# Checks that dependencies point down the layer order of README.md's Layout: every
# #include "..." in lib/, apps/, bench/ and kernels/ is resolved to a file, the file to its layer,
# and the pair checked against the table below; kvq_core's layers and kernels/ must not include
# LibTorch; and only lib/kvq/methods parses method strings (no std::regex, no parse_method( other
# than methods::parse_method outside it). tests/ may include anything and is not checked.
# bash, find, grep and POSIX awk only (CI has no python). Prints one line per violation and exits
# 1, or a one-line summary and exits 0. Not here: angle-bracket includes of other projects (only
# LibTorch's are checked), includes produced by macros, anything a comment hides.
#
# Usage: scripts/check_layers.sh [ROOT]      check the tree at ROOT (default: this repository)
#        scripts/check_layers.sh --self-test  check the checker on a small tree it makes
set -euo pipefail

# Which layer may include which (a layer may always include itself). Written out in full rather
# than derived, so the table is the whole rule:
#   apps/kvq (-> bench/, which `kvq bench` fronts), bench/ -> serve -> runtime; eval, calib,
#   runtime -> methods -> artifact, model, data -> quant, common;
#   runtime -> kernels/ -> quant, common; model/io (LibTorch-free model files) sits under both
#   model and artifact (artifact's fingerprints describe a model config).
ALLOWED='
common:
quant:    common
data:     quant common
model/io: quant common
model:    model/io quant common
artifact: model/io quant common
kernels:  quant common
methods:  artifact model model/io data quant common
calib:    methods artifact model model/io data quant common
eval:     methods artifact model model/io data quant common
runtime:  kernels methods artifact model model/io data quant common
serve:    runtime kernels methods artifact model model/io data quant common
apps:     bench serve eval calib runtime kernels methods artifact model model/io data quant common
bench:    serve eval calib runtime kernels methods artifact model model/io data quant common
'
# Built into kvq_core / kvq_quant / kvq_kernels, which link no LibTorch.
NO_TORCH='common quant data model/io artifact kernels'

check() {
  local root=$1
  cd "$root"
  local dirs=()
  for d in lib apps bench kernels; do [ -d "$d" ] && dirs+=("$d"); done
  if [ ${#dirs[@]} -eq 0 ]; then
    echo "check_layers: $root: no lib/, apps/, bench/ or kernels/ to check" >&2
    return 2
  fi
  local sources
  sources=$(find "${dirs[@]}" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' \
                                         -o -name '*.cu' -o -name '*.cuh' \) | LC_ALL=C sort)
  [ -n "$sources" ] || { echo "check_layers: 0 files, nothing to check"; return 0; }
  local all_dirs=()
  for d in lib apps bench kernels tests; do [ -d "$d" ] && all_dirs+=("$d"); done
  # Input 1: every file (for resolving includes); input 2: path:line:text of interesting lines.
  {
    find "${all_dirs[@]}" -type f | sed "s/^/F /"
    # shellcheck disable=SC2086
    printf '%s\n' $sources | xargs grep -nH -E '^[[:space:]]*#[[:space:]]*include|std::regex|parse_method[[:space:]]*\(' \
      | sed 's/^/L /' || true
    printf '%s\n' $sources | sed 's/^/S /'
  } | awk -v allowed="$ALLOWED" -v no_torch="$NO_TORCH" '
    function layer_of(p,   rest, d) {
      if (p ~ /^lib\/kvq\/model\/io\//) return "model/io"
      if (p ~ /^lib\/kvq\/[^\/]+\//) {
        rest = substr(p, 9); d = substr(rest, 1, index(rest, "/") - 1)
        return (d in may) ? d : "?" d
      }
      if (p ~ /^apps\//) return "apps"
      if (p ~ /^bench\//) return "bench"
      if (p ~ /^kernels\//) return "kernels"
      if (p ~ /^tests\//) return "tests"
      return "?"
    }
    # "a/b/../c/./d.h" -> "a/c/d.h"
    function normalize(p,   n, parts, i, out, k, stack) {
      n = split(p, parts, "/"); k = 0
      for (i = 1; i <= n; i++) {
        if (parts[i] == "" || parts[i] == ".") continue
        if (parts[i] == "..") { if (k > 0) k--; continue }
        stack[++k] = parts[i]
      }
      out = ""
      for (i = 1; i <= k; i++) out = out (i > 1 ? "/" : "") stack[i]
      return out
    }
    function dirname(p,   i, d) {
      d = p; sub(/\/[^\/]*$/, "", d)
      return d == p ? "." : d
    }
    # The file an #include "name" in `src` refers to, as the build would find it; "" if none.
    function resolve(src, name,   c) {
      if (name ~ /^kvq\//) return "lib/" name
      c = normalize(dirname(src) "/" name); if (c in files) return c
      c = "lib/" name; if (c in files) return c
      c = "kernels/" name; if (c in files) return c
      c = "bench/" name; if (c in files) return c
      c = "tests/" name; if (c in files) return c
      return ""
    }
    function report(msg) { print msg; bad_files[cur] = 1; n_bad++ }
    BEGIN {
      n = split(allowed, rows, "\n")
      for (i = 1; i <= n; i++) {
        if (rows[i] !~ /:/) continue
        l = rows[i]; sub(/:.*/, "", l); deps = rows[i]; sub(/^[^:]*:/, "", deps)
        may[l] = " " deps " "; gsub(/[ \t]+/, " ", may[l])
      }
      n = split(no_torch, t, " ")
      for (i = 1; i <= n; i++) torch_free[t[i]] = 1
    }
    $1 == "F" { files[substr($0, 3)] = 1; next }
    $1 == "S" { n_files++; p = substr($0, 3); L = layer_of(p); if (L ~ /^\?/) { cur = p; report(p ": in no layer of scripts/check_layers.sh (add lib/kvq/" substr(L, 2) " to its table)") }; next }
    $1 == "L" {
      line = substr($0, 3)
      cur = substr(line, 1, index(line, ":") - 1); line = substr(line, length(cur) + 2)
      no = substr(line, 1, index(line, ":") - 1); text = substr(line, length(no) + 2)
      where = cur ":" no
      src = layer_of(cur)
      if (src ~ /^\?/) next  # reported once per file above
      if (text ~ /^[ \t]*\/\//) next
      if (text ~ /^[ \t]*#[ \t]*include/) {
        if (match(text, /"[^"]+"/)) {
          n_includes++
          name = substr(text, RSTART + 1, RLENGTH - 2)
          target = resolve(cur, name)
          if (target == "") { report(where " includes " name ": no such file under lib/, kernels/ or next to it"); next }
          dst = layer_of(target)
          if (dst == src) next
          if (dst ~ /^\?/) { report(where " includes " name ": " target " is in no layer"); next }
          if (index(may[src], " " dst " ") == 0) report(where " includes " name ": " src " may not depend on " dst)
        } else if (match(text, /<(ATen|torch|c10)\/[^>]*>/) && (src in torch_free)) {
          report(where " includes " substr(text, RSTART + 1, RLENGTH - 2) ": " src " may not depend on LibTorch")
        }
        next
      }
      if (cur ~ /^lib\/kvq\/methods\//) next
      if (text ~ /std::regex/) report(where " uses std::regex: only lib/kvq/methods parses method strings")
      else if (text ~ /parse_method[ \t]*\(/ && text !~ /methods::parse_method[ \t]*\(/)
        report(where " has its own parse_method(: only lib/kvq/methods parses method strings (call methods::parse_method)")
    }
    END {
      nb = 0; for (f in bad_files) nb++
      if (n_bad > 0) { printf "check_layers: %d violation(s) in %d file(s)\n", n_bad, nb; exit 1 }
      printf "check_layers: %d files, %d includes, all pointing down the layer order\n", n_files, n_includes
    }'
}

# expect_check CASE TREE RC OUTPUT: runs the checker on TREE and compares exit code and output.
expect_check() {
  local out rc=0
  out=$(check "$2") || rc=$?
  if [ "$rc" -ne "$3" ] || [ "$out" != "$4" ]; then
    printf 'check_layers --self-test: %s: expected exit %d and\n%s\nfound exit %d and\n%s\n' "$1" "$3" "$4" "$rc" "$out" >&2
    return 1
  fi
}

self_test() {
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/lib/kvq/quant" "$tmp/lib/kvq/methods" "$tmp/lib/kvq/eval" "$tmp/apps/kvq"
  printf '#pragma once\n' > "$tmp/lib/kvq/quant/pack.h"
  printf '#pragma once\n' > "$tmp/lib/kvq/eval/table.h"
  printf '#pragma once\n#include <vector>\n' > "$tmp/lib/kvq/methods/fit.h"
  printf '#include "kvq/methods/fit.h"\n#include "kvq/quant/pack.h"\n' > "$tmp/lib/kvq/methods/fit.cpp"
  printf '#pragma once\n' > "$tmp/apps/kvq/command.h"
  printf '#include "command.h"\n#include "kvq/eval/table.h"\nauto s = methods::parse_method(x);\n' \
    > "$tmp/apps/kvq/eval.cpp"
  expect_check "a clean tree" "$tmp" 0 \
    'check_layers: 6 files, 4 includes, all pointing down the layer order' || return 1

  printf '#pragma once\n#include "kvq/quant/pack.h"\n#include "kvq/eval/table.h"\n' > "$tmp/lib/kvq/methods/fit.h"
  expect_check "one bad include among good ones" "$tmp" 1 \
    'lib/kvq/methods/fit.h:3 includes kvq/eval/table.h: methods may not depend on eval
check_layers: 1 violation(s) in 1 file(s)' || return 1

  printf '#pragma once\n' > "$tmp/lib/kvq/methods/fit.h"
  printf '#include <regex>\nstatic const std::regex nuq("nuq([234])");\nSpec parse_method(const char*);\n' \
    > "$tmp/apps/kvq/bench.cpp"
  printf '#include <ATen/ATen.h>\n' > "$tmp/lib/kvq/quant/pack.cpp"
  expect_check "method strings parsed outside methods, LibTorch below kvq_torch" "$tmp" 1 \
    'apps/kvq/bench.cpp:2 uses std::regex: only lib/kvq/methods parses method strings
apps/kvq/bench.cpp:3 has its own parse_method(: only lib/kvq/methods parses method strings (call methods::parse_method)
lib/kvq/quant/pack.cpp:1 includes ATen/ATen.h: quant may not depend on LibTorch
check_layers: 3 violation(s) in 2 file(s)' || return 1
  echo "check_layers --self-test: passed"
}

case "${1:-}" in
  --self-test) self_test ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) check "${1:-$(dirname "$0")/..}" ;;
esac
