#!/usr/bin/env python3
"""Summarizes an Nsight Compute source export of one kernel for bench/kernels_notes.md.

Input: the CSV of `ncu -i REPORT --page source --csv --print-source sass` (plain or .gz) of a
report taken with `--section SourceCounters --section WarpStateStats` (scripts/device.sh
profile does both). Output (markdown on stdout):
  - the kernel, its warp instructions executed and warp-stall samples;
  - instructions and stall samples by SASS opcode (the first word without modifiers), largest first;
  - the lines with the most stall samples and their main stall reason;
  - L2 sectors requested by global and local (spill) accesses, and the global ones beyond ideal;
  - with --sass FILE --function NAME (the disassembly of the same build with its source lines, from
    scripts/sass.sh, and a substring of the kernel's mangled name): instructions and stall samples
    by source line, each SASS address matched to the line nvdisasm annotates it with, inlined code
    counted at the line of --file (the kernel's .cu) that called it, the innermost line beside it.
Used on the GPU machine, which has python3 (CI does not run it), and here on a profile the device
run brought back, e.g.
  scripts/sass.sh kernels/kv_append.cu /tmp/append
  python3 bench/ncu_summary.py ncu-vappend-...-sass.csv.gz --sass /tmp/append.sass \
    --function kv_append_kernelILi128ELi3ELb0 --file kv_append.cu
"""
import argparse
import bisect
import collections
import csv
import gzip
import re
import sys


def read_rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    kernel = ""
    for i, row in enumerate(rows):
        if row and row[0] == "Kernel Name":
            kernel = row[1] if len(row) > 1 else ""
        if row and row[0] == "Address" and "Source" in row:
            return kernel, row, rows[i + 1:]
    sys.exit(f"ncu_summary: {path}: no 'Address,Source,...' header (not a --print-source sass export?)")


def sass_lines(path, function):
    """{offset: (innermost (file, line), inlined-at (file, line) or None)} for the function whose
    label contains `function` in an nvdisasm --print-line-info listing."""
    with open(path) as f:
        lines = f.read().split("\n")
    start = next((i for i, l in enumerate(lines)
                  if function in l and l.endswith(":") and not l.startswith((" ", "\t", "."))), None)
    if start is None:
        sys.exit(f"ncu_summary: {path}: no function label containing '{function}'")
    at, where = {}, None
    for line in lines[start + 1:]:
        if line.startswith("//----"):  # the next function's header
            break
        m = re.match(r'\s*//## File "(?:.*/)?(.*?)", line (\d+)(?:.*inlined at "(?:.*/)?(.*?)", line (\d+))?',
                     line)
        if m:
            where = ((m.group(1), int(m.group(2))),
                     (m.group(3), int(m.group(4))) if m.group(3) else None)
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/", line)
        if m:
            at[int(m.group(1), 16)] = where
    return at


def by_source_line(data, col, c_exec, c_samp, path, function, own_file, top):
    at = sass_lines(path, function)
    listed = sorted(at)
    base = int(data[0][col["Address"]], 16)
    rows = collections.defaultdict(lambda: [0.0, 0.0, collections.Counter()])
    matched = 0
    for r in data:
        offset = int(r[col["Address"]], 16) - base
        if offset in at:
            matched += 1
        else:  # an opcode this nvdisasm does not print (11.8: VIADD): the line listed before it
            i = bisect.bisect_right(listed, offset) - 1
            offset = listed[i] if i >= 0 else offset
        where = at.get(offset)
        if where is None:
            key, inner = "?", "?"
        else:
            (f, n), outer = where
            own = (f, n) if f == own_file else (outer if outer and outer[0] == own_file else None)
            key = f"{own[0]}:{own[1]}" if own else f"{f}:{n}"
            inner = f"{f}:{n}"
        rows[key][0] += number(r, c_exec)
        rows[key][1] += number(r, c_samp)
        rows[key][2][inner] += number(r, c_samp)
    total_exec = sum(v[0] for v in rows.values())
    total_samp = sum(v[1] for v in rows.values())
    print(f"\nBy source line ({matched} of {len(data)} addresses listed in {path}, the rest counted "
          f"at the line listed before them; inlined code at the {own_file} line that called it where "
          f"the listing says, as CUDA 12's nvdisasm does, 11.8's giving the innermost line only):\n")
    print("| line | % of instructions | % of stall samples | innermost line (most samples) |")
    print("|---|---:|---:|---|")
    for key, (ex, sa, inner) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"| {key} | {100 * ex / max(total_exec, 1):.1f} | {100 * sa / max(total_samp, 1):.1f} | "
              f"{inner.most_common(1)[0][0]} |")


def number(row, col):
    try:
        return float(row[col].replace(",", "")) if col is not None and col < len(row) else 0.0
    except ValueError:
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="ncu --page source --csv --print-source sass output (.csv or .csv.gz)")
    ap.add_argument("--top", type=int, default=15, help="lines to list by stall samples")
    ap.add_argument("--sass", help="nvdisasm listing with source lines (scripts/sass.sh OUT.sass)")
    ap.add_argument("--function", help="with --sass: a substring of the kernel's mangled name")
    ap.add_argument("--file", default="", help="with --sass: the kernel's own source file name")
    args = ap.parse_args()
    if args.sass and not args.function:
        ap.error("--sass needs --function")
    kernel, header, data = read_rows(args.csv)
    col = {name: i for i, name in enumerate(header)}
    c_src = col["Source"]
    c_exec = col.get("Instructions Executed")
    c_samp = col.get("Warp Stall Sampling (All Samples)")
    stall_cols = [(name[len("stall_"):], i) for name, i in col.items()
                  if name.startswith("stall_") and "(Not Issued)" not in name]
    data = [r for r in data if len(r) > c_src]

    total_exec = sum(number(r, c_exec) for r in data)
    total_samp = sum(number(r, c_samp) for r in data)
    print(f"kernel: {kernel}\n")
    print(f"{len(data)} SASS instructions; {total_exec:,.0f} warp instructions executed; "
          f"{total_samp:,.0f} warp-stall samples\n")

    by_op = collections.defaultdict(lambda: [0.0, 0.0])
    for r in data:
        words = [w for w in r[c_src].split() if not w.startswith("@")]
        op = words[0].split(".")[0] if words else "?"
        by_op[op][0] += number(r, c_exec)
        by_op[op][1] += number(r, c_samp)
    print("| opcode | warp instructions | % of instructions | % of stall samples |")
    print("|---|---:|---:|---:|")
    for op, (ex, sa) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"| {op} | {ex:,.0f} | {100 * ex / max(total_exec, 1):.1f} | "
              f"{100 * sa / max(total_samp, 1):.1f} |")

    print(f"\nThe {args.top} instructions with the most stall samples:\n")
    print("| address | instruction | executed | samples | main stall |")
    print("|---|---|---:|---:|---|")
    for r in sorted(data, key=lambda r: -number(r, c_samp))[:args.top]:
        main_stall = max(stall_cols, key=lambda nc: number(r, nc[1]), default=("-", None))[0]
        print(f"| {r[0][-6:]} | `{' '.join(r[c_src].split())[:70]}` | {number(r, c_exec):,.0f} | "
              f"{number(r, c_samp):,.0f} | {main_stall} |")

    sectors = {name: sum(number(r, col.get(name)) for r in data)
               for name in ("L2 Theoretical Sectors Global", "L2 Theoretical Sectors Global Ideal",
                            "L2 Theoretical Sectors Global Excessive",
                            "L2 Theoretical Sectors Local")}
    print("\n| L2 sectors | count | bytes |")
    print("|---|---:|---:|")
    for name, n in sectors.items():
        print(f"| {name[len('L2 Theoretical Sectors '):]} | {n:,.0f} | {32 * n / 1e6:,.1f} MB |")
    if args.sass:
        by_source_line(data, col, c_exec, c_samp, args.sass, args.function, args.file, 25)


if __name__ == "__main__":
    main()
