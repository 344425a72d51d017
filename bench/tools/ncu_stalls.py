#!/usr/bin/env python3
"""Where a kernel's warps stall, from Nsight Compute's source page.

usage: ncu_stalls.py SASS.csv [--top N]

SASS.csv is `ncu --import REPORT --page source --csv --print-source sass` of a report taken with
the SourceCounters section (run_decode_device.sh's `ncusource` step). Prints the instructions
holding the most warp-state samples, each with its share of all samples and its top stall
reasons (Nsight Compute's stall_* columns: long_sb is a wait for a global load's register, mio an
instruction queue to the memory pipeline full, barrier a CTA barrier). A sample counts a warp that
was resident, so the shares say where warps wait, not by themselves what the kernel's time is.
"""
import argparse
import csv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=16)
    args = ap.parse_args()
    rows = list(csv.reader(open(args.csv)))
    header, data = rows[1], rows[2:]  # rows[0] names the kernel
    source, samples = header.index("Source"), header.index("Warp Stall Sampling (All Samples)")
    reasons = [c for c in header if c.startswith("stall_") and "Not Issued" not in c]
    value = lambda r, i: float(r[i] or 0)
    total = sum(value(r, samples) for r in data)
    print(f"{rows[0][1] if len(rows[0]) > 1 else ''}")
    print(f"{len(data)} instructions, {total:.0f} samples\n")
    print("| address | share | instruction | top stall reasons (samples) |\n|---|---|---|---|")
    for r in sorted(data, key=lambda r: -value(r, samples))[: args.top]:
        top = sorted(((value(r, header.index(c)), c[len("stall_"):]) for c in reasons), reverse=True)[:3]
        why = ", ".join(f"{name} {v:.0f}" for v, name in top if v > 0)
        print(f"| {int(r[0], 16) & 0xFFFFF:05x} | {100 * value(r, samples) / total:.1f}% | `{r[source].strip()[:64]}` | {why} |")


if __name__ == "__main__":
    main()
