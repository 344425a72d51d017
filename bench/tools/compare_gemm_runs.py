#!/usr/bin/env python3
"""Side-by-side markdown tables of several `spense bench gemm --json` reports (one per cuSPARSELt
version, or repeats of one): the GEMMs alone (dense cuBLASLt vs 2:4 cuSPARSELt) and the whole
Spense MLP's speedup over the dense MLP at each dense ratio.

usage: compare_gemm_runs.py [--model M] [--n 32,1024,4096,16384] REPORT.json...
"""
import argparse
import json


def label(report, path):
    return f"{report['run']['cusparselt']} ({path.rsplit('/', 1)[-1].removesuffix('.json')})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', default='qwen3-32b')
    ap.add_argument('--n', default='32,1024,4096,16384')
    ap.add_argument('reports', nargs='+')
    args = ap.parse_args()
    tokens = [int(n) for n in args.n.split(',')]
    reports = [(label(json.load(open(p)), p), json.load(open(p))) for p in args.reports]

    print(f'GEMMs alone, {args.model}: dense ms / 2:4 ms (2:4 speedup), median\n')
    print('| dtype | layer | N | ' + ' | '.join(name for name, _ in reports) + ' |')
    print('|---|---|---|' + '---|' * len(reports))
    for dtype in ('bf16', 'fp8'):
        for layer in ('gate_up', 'down'):
            for n in tokens:
                cells = []
                for _, r in reports:
                    rows = {g['kind']: g for g in r['gemm']
                            if g['model'] == args.model and g['dtype'] == dtype and g['layer'] == layer and g['n'] == n}
                    d, s = rows['dense']['ms']['median'], rows['2:4']['ms']['median']
                    cells.append(f'{d:.3f} / {s:.3f} ({d / s:.2f}x)')
                print(f'| {dtype} | {layer} | {n} | ' + ' | '.join(cells) + ' |')

    ratios = [x for x in reports[0][1]['options']['ratios'] if x != 1.0]
    print('\nWhole MLP, speedup over the dense MLP at dense ratio rho (rho 0 = plain 2:4)\n')
    for name, r in reports:
        print(f'{name}:\n')
        print('| model | dtype | N | dense ms | ' + ' | '.join(f'rho {x:g}' for x in ratios) + ' |')
        print('|---|---|---|---|' + '---|' * len(ratios))
        for shape in r['options']['shapes']:
            for dtype in ('bf16', 'fp8'):
                for n in tokens:
                    rows = {m['ratio']: m for m in r['mlp'] if m['model'] == shape['name'] and m['dtype'] == dtype and m['n'] == n}
                    cells = [f"{rows[x]['speedup_vs_dense']:.2f}x" for x in ratios]
                    print(f"| {shape['name']} | {dtype} | {n} | {rows[1.0]['ms']['median']:.3f} | " + ' | '.join(cells) + ' |')
        print()


if __name__ == '__main__':
    main()
