#!/usr/bin/env python3
"""Lists one kernel's global loads in an nvdisasm listing and where each result is first used.

A load whose register is read a few instructions later makes the warp wait a whole global
round trip there (several hundred cycles from DRAM); a run of such loads is a chain of round
trips. Also listed: barriers, warp matches and exits, as landmarks. Static and approximate: the
first use is searched in listing order, not along the branches, and an instruction that
rewrites the register before reading it is not told apart. Input: `nvdisasm -c -g` output
(scripts/sass.sh writes it).

  scripts/sass_loads.py OUT.sass --kernel 'kv_append_kernelILi128ELi3ELb0' [--near 30]
"""
import argparse
import re
import sys

INS = re.compile(r"\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
LOAD = re.compile(r"^(@!?U?P\w+\s+)?(LDG\S*|LD\.\S*|LDL\S*)\s+(R\d+)")
MARK = re.compile(r"\b(BAR\.\S+|BAR|MATCH\.\S+|EXIT)\b")


def kernel_body(lines, pattern):
    start = None
    for i, line in enumerate(lines):
        if line.startswith("//---") and ".text." in line:
            if start is not None:
                return lines[start:i]
            if re.search(pattern, line):
                start = i
    if start is None:
        sys.exit(f"sass_loads: no kernel matches {pattern!r}")
    return lines[start:]


def reads(ins, reg):
    """Whether instruction text `ins` reads register reg (a source operand or an address)."""
    body = re.sub(r"^@!?U?P\w+\s+", "", ins)
    parts = body.split(None, 1)
    if len(parts) < 2:
        return False
    ops = parts[1]
    if re.search(r"\[" + reg + r"(\.64)?[\]+ ]", ops):
        return True
    sources = ops.split(",", 1)[1] if "," in ops else ""
    if parts[0].startswith(("ST", "ATOM", "RED")):  # stores read their first operand too
        sources = ops
    return re.search(r"\b" + reg + r"\b", sources) is not None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sass", help="nvdisasm -c -g output")
    ap.add_argument("--kernel", required=True, help="regex for the kernel's .text section name")
    ap.add_argument("--near", type=int, default=30,
                    help="a first use within this many instructions is marked WAIT")
    args = ap.parse_args()
    lines = open(args.sass).read().split("\n")
    ins = [(m.group(1), m.group(2)) for m in map(INS.match, kernel_body(lines, args.kernel)) if m]
    waits = 0
    for k, (addr, text) in enumerate(ins):
        if MARK.search(text) and not LOAD.match(text):
            print(f"{addr:>6}  {text}")
            continue
        m = LOAD.match(text)
        if not m:
            continue
        reg = m.group(3)
        use = next((j for j in range(k + 1, len(ins)) if reads(ins[j][1], reg)), None)
        if use is None:
            print(f"{addr:>6}  {text:60.60}  never read")
            continue
        dist = use - k
        flag = "WAIT" if dist <= args.near else ""
        waits += flag == "WAIT"
        print(f"{addr:>6}  {text:60.60}  first use +{dist:<5} {flag:4} {ins[use][1][:40]}")
    print(f"{waits} loads first used within {args.near} instructions")


if __name__ == "__main__":
    main()
