#!/usr/bin/env python3
"""Sets each row of one `kvq bench kernels --json-file` run beside the same row of a baseline run.

Rows match on (shape, batch, context, method, kernel); each shows both times, new / base, both
speedups over SDPA (each against the SDPA of its own run) and, where timed, both appends; then
one line of the compressed rows' new / base ratios (median, range, how many faster or more than
1% slower) and one of the SDPA rows', whose code both runs share: the runs' noise.
scripts/device.sh writes the pair when KVQ_BASE_SRC names a baseline tree.

Either side may name several runs of the same tree, comma-separated (scripts/device.sh's
KVQ_BENCH_ROUNDS runs the trees in turn, A B A B ...): each row then takes the median of its
runs' times, and a line after the table gives each row's new / base ratio round by round where
the two sides have as many runs.

  bench/kernels_compare.py BASE.json NEW.json > compare.md
  bench/kernels_compare.py BASE.json,BASE-r2.json NEW.json,NEW-r2.json > compare.md
"""
import argparse
import json
import sys


def one_run(path):
    try:
        with open(path) as f:
            data = json.load(f)
        out = {}
        for r in data.get("results", []):
            out[(r["shape"], r["batch"], r["context"], r["method"], r["kernel"])] = r
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
        sys.exit(f"kernels_compare: {path}: not a `kvq bench kernels --json-file` output ({e})")
    return data, out


def median(xs):
    r = sorted(xs)
    n = len(r)
    return r[n // 2] if n % 2 else (r[n // 2 - 1] + r[n // 2]) / 2


def rows(paths):
    """The runs named by PATHS (comma-separated): the first run's metadata, each row with the
    median of its runs' times (ms, speedup_sdpa, append_ms, step_append_ms) and wrong if any run
    found it so, and the runs' own rows."""
    runs = [one_run(p) for p in paths.split(",") if p]
    if not runs:
        sys.exit(f"kernels_compare: '{paths}': no file named")
    out = {}
    for key in runs[0][1]:
        seen = [r[key] for _, r in runs if key in r]
        row = dict(seen[0])
        for field in ("ms", "speedup_sdpa", "append_ms", "step_append_ms"):
            xs = [x for x in (ms(r, field) for r in seen) if x is not None]
            row[field] = median(xs) if xs else -1
        row["wrong"] = any(r.get("wrong") for r in seen)
        out[key] = row
    return runs[0][0], out, [r for _, r in runs]


def ms(r, key="ms"):
    x = r.get(key, -1) if r else -1
    return x if x is not None and x > 0 else None


def fmt(x, spec):
    return format(x, spec) if x is not None else "-"


def spread(ratios):
    r = sorted(ratios)
    return f"median {median(r):.3f}, range {r[0]:.3f}-{r[-1]:.3f}"


def summary(base, new):
    """The compressed rows' new / base ratios in one line (what a landing rule reads), beside
    the SDPA rows' (the same code in both runs: their spread is the runs' noise)."""
    comp, sdpa = [], []
    for key, n in new.items():
        bm, nm = ms(base.get(key)), ms(n)
        if not (bm and nm):
            continue
        if key[3] != "fp16":
            comp.append(nm / bm)
        elif key[4] == "SDPA":
            sdpa.append(nm / bm)
    if comp:
        slower = sum(x > 1.01 for x in comp)
        print(f"\nCompressed rows, new / base: {len(comp)} rows, {spread(comp)}, "
              f"{sum(x < 1 for x in comp)} faster, {slower} more than 1% slower.")
    if sdpa:
        print(f"SDPA rows (the same code in both runs), new / base: {spread(sdpa)}.")


def rounds(base_runs, new_runs):
    """With as many runs on each side (taken in turn), each compressed row's new / base ratio
    round by round: whether a row's difference repeats or is one run's noise."""
    if len(base_runs) < 2 or len(base_runs) != len(new_runs):
        return
    print(f"\nCompressed rows, new / base in each of the {len(new_runs)} rounds:\n")
    print("| shape | batch | context | method | " + " | ".join(
        f"round {i + 1}" for i in range(len(new_runs))) + " |")
    print("|---|---:|---:|---|" + "---:|" * len(new_runs))
    for key in sorted(new_runs[0]):
        if key[3] == "fp16":
            continue
        ratios = [ms(n.get(key)) / ms(b.get(key)) if ms(n.get(key)) and ms(b.get(key)) else None
                  for b, n in zip(base_runs, new_runs)]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | "
              + " | ".join(fmt(x, ".3f") for x in ratios) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("new")
    args = ap.parse_args()
    base_data, base, base_runs = rows(args.base)
    new_data, new, new_runs = rows(args.new)
    if not new:
        sys.exit(f"kernels_compare: {args.new}: no results")
    print(f"Baseline {args.base} ({base_data.get('device', '?')}) against {args.new} "
          f"({new_data.get('device', '?')}).")
    if len(base_runs) > 1 or len(new_runs) > 1:
        print(f"Times are the medians of {len(base_runs)} baseline and {len(new_runs)} new runs.")
    empty = [d.get("empty_kernel_ms") for d in (base_data, new_data)]
    if all(isinstance(x, (int, float)) and x > 0 for x in empty):
        print(f"An empty kernel (the floor of any append): {empty[0]:.4f} ms in the baseline's "
              f"run, {empty[1]:.4f} in the new one.")
    print()
    print("| shape | batch | context | method | kernel | base ms | new ms | new / base "
          "| base x SDPA | new x SDPA | base append ms | new append ms | base append + step ms "
          "| new append + step ms |")
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(new, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
        n, b = new[key], base.get(key)
        bm, nm = ms(b), ms(n)
        ratio = nm / bm if bm and nm else None
        wrong = " (WRONG)" if n.get("wrong") else ""
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]}{wrong} | {fmt(bm, '.4f')} "
              f"| {fmt(nm, '.4f')} | {fmt(ratio, '.3f')} | {fmt(ms(b, 'speedup_sdpa'), '.2f')} "
              f"| {fmt(ms(n, 'speedup_sdpa'), '.2f')} | {fmt(ms(b, 'append_ms'), '.4f')} "
              f"| {fmt(ms(n, 'append_ms'), '.4f')} | {fmt(ms(b, 'step_append_ms'), '.4f')} "
              f"| {fmt(ms(n, 'step_append_ms'), '.4f')} |")
    summary(base, new)
    rounds(base_runs, new_runs)
    missing = sorted(set(base) - set(new))
    if missing:
        print(f"\n{len(missing)} baseline rows have no new row.")


if __name__ == "__main__":
    main()
