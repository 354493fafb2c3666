#!/usr/bin/env python3
"""Summarizes an Nsight Compute source export of one kernel for bench/kernels_notes.md.

Input: the CSV of `ncu -i REPORT --page source --csv --print-source sass` (plain or .gz) of a
report taken with `--section SourceCounters --section WarpStateStats` (scripts/device.sh
profile does both). Output (markdown on stdout):
  - the kernel, its warp instructions executed and warp-stall samples;
  - instructions and stall samples by SASS opcode (the first word without modifiers), largest first;
  - the lines with the most stall samples and their main stall reason;
  - L2 sectors requested by global and local (spill) accesses, and the global ones beyond ideal.
Used on the GPU machine, which has python3 (CI does not run it).
"""
import argparse
import collections
import csv
import gzip
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


def number(row, col):
    try:
        return float(row[col].replace(",", "")) if col is not None and col < len(row) else 0.0
    except ValueError:
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="ncu --page source --csv --print-source sass output (.csv or .csv.gz)")
    ap.add_argument("--top", type=int, default=15, help="lines to list by stall samples")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
