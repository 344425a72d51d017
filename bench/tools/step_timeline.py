#!/usr/bin/env python3
"""Each kernel of a replayed decode step where it ran: its time and the gap before it.

usage: step_timeline.py TRACE.csv [--last K] [--timed]

TRACE.csv has one row per kernel with the columns "Start (ns)", "Duration (ns)" and "Name":
bench/tools/kernel_trace.cpp's output (a CUPTI injection library; run_decode_device.sh's
`timeline` step), or `nsys stats --report cuda_gpu_trace --format csv` of a trace taken with
`--cuda-graph-trace node`. A full step is a run of kernels from embed_kernel to advance_kernel that
holds the attention kernel (the elementwise part alone also runs from embed to advance, without
it). Consecutive full steps of as many kernels make a configuration, in the order the bench runs
them (the tuning's variants first); the last K steps of each (its timed replays) are summarized.
--timed keeps the last configuration of each engine (the bench builds one per sparsity, seconds
apart; a pause of more than 0.2 s between two full steps starts a new engine).

Unlike Nsight Compute's durations (ncu_summary.py), these are the kernels as the step runs them: a
kernel launched early by a programmatic edge counts from its launch, so its time includes its wait
and the gap before it is negative. For each slot of a layer (the kernels from one input norm to
the next, in order): the median time, the median gap from the previous kernel's end to its start,
and their totals over the step.
"""
import argparse
import csv
import re
import statistics
import sys
from collections import defaultdict


def short_name(name):
    name = name.replace("(anonymous namespace)::", "")
    name = re.sub(r"\(.*", "", name)
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"spense::(gpu::)?(<unnamed>::)?", "", name)
    if not name.startswith("nvjet"):
        name = re.sub(r"<.*>", "", name)
    return name.strip()[:60]


def load(path):
    rows = list(csv.DictReader(open(path)))
    if not rows:
        sys.exit(f"{path}: no kernel rows (was the program run with CUDA_INJECTION64_PATH set to libkernel_trace.so?)")
    key = {k.lower(): k for k in rows[0]}
    start, dur, name = key.get("start (ns)"), key.get("duration (ns)"), key.get("name")
    if not (start and dur and name):
        sys.exit(f"{path}: expected the columns 'Start (ns)', 'Duration (ns)' and 'Name', got {list(rows[0])}")
    kernels = [(int(r[start]), int(r[dur]), short_name(r[name])) for r in rows if r[dur] and not r[name].startswith("[CUDA")]
    kernels.sort()
    return kernels


def full_steps(kernels):
    steps, i = [], 0
    while i < len(kernels):
        if kernels[i][2].startswith("embed_kernel"):
            j = i
            while j < len(kernels) and not kernels[j][2].startswith("advance_kernel"):
                j += 1
            run = kernels[i:j + 1]
            if any("attention" in k[2] for k in run):
                steps.append(run)
            i = j + 1
        else:
            i += 1
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--last", type=int, default=10)
    ap.add_argument("--timed", action="store_true", help="only each engine's timed configuration")
    args = ap.parse_args()
    steps = full_steps(load(args.csv))
    if not steps:
        sys.exit(f"{args.csv}: no decode step (embed_kernel ... attention ... advance_kernel) in the trace")
    # Configurations: consecutive steps of one engine with as many kernels (those on forked streams
    # may start in either order).
    configs, engines = [], []
    for i, s in enumerate(steps):
        sig = tuple(k[2] for k in s)
        new_engine = i == 0 or s[0][0] - steps[i - 1][-1][0] > 0.2e9
        if configs and not new_engine and len(configs[-1][0]) == len(sig):
            configs[-1][1].append(s)
        else:
            configs.append((sig, [s]))
            engines.append(new_engine)
    for n, (sig, runs) in enumerate(configs):
        if args.timed and n + 1 < len(configs) and not engines[n + 1]:
            continue
        runs = runs[-args.last:]
        norms = [i for i, name in enumerate(sig) if name.startswith("add_norm")]
        layers = sum("attention" in name for name in sig)
        per_layer = (norms[-1] - norms[0]) // layers
        spans = [(s[-1][0] + s[-1][1] - s[0][0]) / 1e6 for s in runs]
        print(f"\n### Configuration {n + 1}: {len(runs)} steps of {len(sig)} kernels, "
              f"median {statistics.median(spans):.3f} ms from the first kernel's start to the last one's end\n")
        times, gaps = defaultdict(list), defaultdict(list)
        for s in runs:
            for i, (t, d, name) in enumerate(s):
                slot = (i - norms[0]) % per_layer if norms[0] <= i < norms[-1] else None
                label = (slot, name)
                times[label].append(d / 1e3)
                if i:
                    gaps[label].append((t - (s[i - 1][0] + s[i - 1][1])) / 1e3)
        print("| slot | kernel | count a step | median us | median gap before, us | step total us | step gaps us |")
        print("|---|---|---|---|---|---|---|")
        for label in sorted(times, key=lambda x: (x[0] is None, x[0] if x[0] is not None else 0, x[1])):
            count = len(times[label]) / len(runs)
            t, g = statistics.median(times[label]), statistics.median(gaps[label]) if gaps[label] else 0.0
            total_t = sum(times[label]) / len(runs)
            total_g = sum(gaps[label]) / len(runs) if gaps[label] else 0.0
            slot = "" if label[0] is None else str(label[0])
            print(f"| {slot} | {label[1]} | {count:g} | {t:.2f} | {g:.2f} | {total_t:.0f} | {total_g:.0f} |")


if __name__ == "__main__":
    main()
