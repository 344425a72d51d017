"""Prints the tables of docs/results.md from the outputs of scripts/study.sh.

    python3 scripts/study_table.py study-results
"""
import glob
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "study-results"
ORDER = ["original", "magnitude-2:4", "wanda-2:4", "sparsegpt-2:4", "sparsegpt-unstructured-50", "spensegpt-37.5",
         "spensegpt-25", "spensegpt+-37.5", "spensegpt+-25", "spensegpt+-25-score-sparsegpt",
         "spensegpt+-25-layout-front", "spensegpt+-25-layout-inplace"]

for tag in ["stories260k", "smollm2"]:
    evals = sorted({os.path.basename(p).split(".eval-")[1][:-5] for p in glob.glob(f"{out}/{tag}-*.eval-*.json")})
    if not evals:
        continue
    print(f"\n### {tag}\n")
    print("| run | MLP sparsity | " + " | ".join(f"ppl {e}" for e in evals) + " | mean MLP error | pruning time |")
    print("|---" * (4 + len(evals)) + "|")
    for name in ORDER:
        cells = []
        for e in evals:
            p = f"{out}/{tag}-{name}.eval-{e}.json"
            cells.append(f"{json.load(open(p))['perplexity']:.3f}" if os.path.exists(p) else "-")
        sj = f"{out}/{tag}-{name}/spense.json"
        if os.path.exists(sj):
            s = json.load(open(sj))
            sparsity, secs = f"{s['mlp_sparsity']:.3f}", f"{s['pruning_seconds']:.1f} s"
            # mlp_error: ||mlp'(h) - mlp(h)||^2 / ||mlp(h)||^2 on the calibration tokens, per layer.
            err = f"{sum(l['mlp_error'] for l in s['layers']) / len(s['layers']):.4f}"
        else:
            sparsity, secs, err = ("0", "-", "0") if name == "original" else ("-", "-", "-")
        print(f"| {name} | {sparsity} | " + " | ".join(cells) + f" | {err} | {secs} |")
