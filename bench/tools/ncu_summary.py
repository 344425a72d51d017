#!/usr/bin/env python3
"""Per-kernel time of each full decode step in an Nsight Compute CSV of `spense bench decode`.

usage: ncu_summary.py NCU.csv [--layers L]

The CSV comes from `ncu --graph-profiling node --metrics gpu__time_duration.sum --csv` over
`spense bench decode --steps 1` (run_decode_device.sh's `profile` step). Each configuration
records a full step, then the step's parts alone; a full step is a run of kernels from
embed_kernel to advance_kernel that holds the attention kernel (the elementwise part alone also
runs from embed to advance, without attention). Kernel durations are what each kernel took on
its own under the profiler: the sum misses the gaps between kernels that the step pays.
"""
import argparse
import csv
import re
from collections import OrderedDict


def short_name(name):
    name = re.sub(r"\(.*", "", name)           # arguments
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"spense::(<unnamed>::)?", "", name)
    name = re.sub(r"<.*>", "", name) if not name.startswith("nvjet") else name
    return name.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    rows = list(csv.reader(open(args.csv)))
    start = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
    hdr = rows[start]
    ki, gi, vi, ui = hdr.index("Kernel Name"), hdr.index("Grid Size"), hdr.index("Metric Value"), hdr.index("Metric Unit")
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
    kernels = [(f"{short_name(r[ki])} {r[gi]}", float(r[vi].replace(",", "")) * scale[r[ui]]) for r in rows[start + 1:] if len(r) > vi]

    steps, i = [], 0
    while i < len(kernels):
        if "embed_kernel" in kernels[i][0]:
            j = next((j for j in range(i, len(kernels)) if "advance_kernel" in kernels[j][0]), None)
            if j is None:
                break
            seg = kernels[i:j + 1]
            if any("decode_split" in k for k, _ in seg):
                steps.append(seg)
            i = j + 1
        else:
            i += 1
    for n, seg in enumerate(steps):
        by = OrderedDict()
        for k, us in seg:
            s = k
            c, t = by.get(s, (0, 0.0))
            by[s] = (c + 1, t + us)
        total = sum(us for _, us in seg)
        print(f"\n### full step {n + 1}: {len(seg)} kernels, {total:.1f} us of kernel time\n")
        print(f"| kernel | launches | total us | us per launch | us per layer |\n|---|---|---|---|---|")
        for s, (c, t) in by.items():
            print(f"| {s[:90]} | {c} | {t:.1f} | {t / c:.2f} | {t / args.layers:.2f} |")


if __name__ == "__main__":
    main()
