#!/usr/bin/env python3
"""The summary of scripts/gpu-bench.sh: a table and one `RESULT name=value` line per figure.

    python3 scripts/gpu_bench_summary.py RAW.tsv [--results results.txt]

RAW.tsv has one `name<TAB>value` line per measurement (a number, or a status word: failed,
not-supported, skipped-time, skipped-cpu); a name measured in several rounds keeps its best value
(the least seconds, the highest rate, the highest peak memory). Added here:
  <figure>_ratio            adiff / PyTorch of explain_<dtype>_*_s (a time: below 1 is adiff
                            faster) and of every *_per_s_* rate (above 1 is adiff faster);
  nccl_world1_overhead_pct  (stage-2 f32 samples/s plain / over NCCL at world size 1 - 1) x 100.
A ratio whose side is not a number takes that side's status. Exit status 1 if a figure failed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

STATUS_ORDER = ("failed", "skipped-time", "not-supported", "skipped-cpu")


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def best(name: str, values: list[str]):
    nums = [n for n in map(num, values) if n is not None]
    if not nums:
        return next((s for s in STATUS_ORDER if s in values), values[-1])
    is_time = name.endswith("_s") and "_per_s" not in name
    return min(nums) if is_time else max(nums)


def fmt(v) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) >= 100 else f"{v:.4g}"
    return str(v)


def summarise(lines: list[str]) -> tuple[dict, list[str]]:
    values: dict[str, list[str]] = {}
    for line in lines:
        if line.strip():
            name, v = line.rstrip("\n").split("\t")
            values.setdefault(name, []).append(v)
    out = {n: best(n, v) for n, v in values.items()}
    order = list(values)
    for name in list(order):
        m = re.fullmatch(r"(.*)_adiff_s", name) or re.fullmatch(r"(.*_per_s)_adiff", name)
        if not m:
            continue
        torch_name = name.replace("_adiff", "_torch")
        if torch_name not in out:
            continue
        ratio = m.group(1) + "_ratio"
        a, t = num(out[name]), num(out[torch_name])
        out[ratio] = round(a / t, 3) if a is not None and t else (out[name] if a is None else out[torch_name])
        order.insert(max(order.index(name), order.index(torch_name)) + 1, ratio)
    if "nccl_world1_overhead_pct" not in out and "nccl_world1_samples_per_s_adiff" in out:
        n, p = num(out["nccl_world1_samples_per_s_adiff"]), num(out.get("stage2_f32_samples_per_s_adiff"))
        out["nccl_world1_overhead_pct"] = (
            round((p / n - 1) * 100, 1) if n and p else (out["nccl_world1_samples_per_s_adiff"] if n is None else "failed")
        )
        order.insert(order.index("nccl_world1_samples_per_s_adiff") + 1, "nccl_world1_overhead_pct")
    return out, order


def table(out: dict) -> list[str]:
    """One row per measured thing: adiff, PyTorch, ratio, peak memory of each."""
    rows = [("", "adiff", "PyTorch", "adiff/PyTorch", "adiff MiB", "PyTorch MiB", "(allocated)")]
    g = lambda k: fmt(out[k]) if k in out else "-"  # noqa: E731
    for dt in ("f32", "bf16"):
        f = f"explain_{dt}"
        if f + "_adiff_s" in out:
            rows.append((f"explain {dt}, s", g(f + "_adiff_s"), g(f + "_torch_s"), g(f + "_ratio"),
                         g(f + "_peak_mem_mb_adiff"), g(f + "_peak_mem_mb_torch"), g(f + "_peak_alloc_mb_torch")))
    for k in out:
        m = re.fullmatch(r"infer_b(\d+)_pairs_per_s_adiff", k)
        if m:
            f = f"infer_b{m.group(1)}"
            rows.append((f"infer batch {m.group(1)}, pairs/s", g(k), g(f + "_pairs_per_s_torch"),
                         g(f + "_pairs_per_s_ratio"), g(f + "_peak_mem_mb_adiff"), g(f + "_peak_mem_mb_torch"),
                         g(f + "_peak_alloc_mb_torch")))
    for s in (2, 3):
        for p in ("f32", "bf16"):
            f = f"stage{s}_{p}"
            if f + "_samples_per_s_adiff" in out:
                rows.append((f"stage {s} {p}, samples/s", g(f + "_samples_per_s_adiff"), g(f + "_samples_per_s_torch"),
                             g(f + "_samples_per_s_ratio"), g(f + "_peak_mem_mb_adiff"), g(f + "_peak_mem_mb_torch"),
                             g(f + "_peak_alloc_mb_torch")))
    if "nccl_world1_samples_per_s_adiff" in out:
        rows.append(("stage 2 f32 NCCL world 1, samples/s", g("nccl_world1_samples_per_s_adiff"), "-",
                     "overhead " + g("nccl_world1_overhead_pct") + (" %" if num(out.get("nccl_world1_overhead_pct")) is not None else ""),
                     g("nccl_world1_peak_mem_mb_adiff"), "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]
    also = re.compile(r"_(load|wall|warm)_s$|_excl_load$|^infer_dtype$|^train_batch$")
    extra = [f"{k} = {fmt(out[k])}" for k in out if also.search(k)]
    if extra:
        text += ["also:"] + ["  " + "; ".join(extra[i : i + 4]) for i in range(0, len(extra), 4)]
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path, help="name<TAB>value lines written by gpu-bench.sh")
    ap.add_argument("--results", type=Path, help="also write the RESULT lines to this file")
    args = ap.parse_args()
    out, order = summarise(args.raw.read_text().splitlines())
    print("\n".join(table(out)))
    print()
    lines = [f"RESULT {n}={fmt(out[n])}" for n in dict.fromkeys(order)]
    print("\n".join(lines))
    if args.results:
        args.results.write_text("\n".join(lines) + "\n")
    return 1 if any(out[n] == "failed" for n in order) else 0


if __name__ == "__main__":
    sys.exit(main())
