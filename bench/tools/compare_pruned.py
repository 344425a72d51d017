"""Compares two pruned checkpoints of one model (e.g. `spense prune --device cuda` against
`--device cpu`): how many 2:4 groups of the MLP weights have the same mask, per layer and overall.

    python3 bench/tools/compare_pruned.py A_DIR B_DIR [--json FILE]

Both directories hold spense's output (model.safetensors in F32, spense.json). The runs must have
pruned from the same calibration tokens: their spense.json fingerprints (calibration.tokens_fnv1a64)
must agree, or the comparison is refused, since a one-token shift of the calibration stream
already changes several percent of the masks.

The two runs may choose dense sets that differ by near-tied indices, which shifts every later
position of the runtime layout. So each intermediate index of A is matched to the index of B whose
gate and up rows are nearest (the same source index), and the groups are compared through that
matching: gate and up rows of A's sparse region, and the 2:4 groups of down's columns, in A's
runtime order. Needs numpy.
"""
import argparse, json, struct, sys
import numpy as np


def load(path):
    with open(path + '/model.safetensors', 'rb') as f:
        b = f.read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == '__metadata__':
            continue
        assert v['dtype'] == 'F32', (k, v['dtype'])
        s, e = v['data_offsets']
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=np.float32).reshape(v['shape'])
    return out


def spense_json(path):
    with open(path + '/spense.json') as f:
        return json.load(f)


def match_rows(a, b):
    """For each row of a, the index of the nearest row of b (squared distance); must be a permutation."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a.astype(np.float64) @ b.T.astype(np.float64))
    m = d.argmin(1)
    assert len(set(m.tolist())) == len(m), 'row matching is not a permutation'
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--json')
    args = ap.parse_args()
    ja, jb = spense_json(args.a), spense_json(args.b)
    fa = ja.get('calibration', {}).get('tokens_fnv1a64')
    fb = jb.get('calibration', {}).get('tokens_fnv1a64')
    if fa is None or fb is None or fa != fb:
        sys.exit(f'refusing to compare: calibration fingerprints differ or are missing ({fa} vs {fb}); '
                 'prune both from the same tokens (same text, range, tokenizer files and seed)')
    A, B = load(args.a), load(args.b)
    layers = sorted({int(k.split('.')[2]) for k in A if '.mlp.' in k})
    rows, tot_same, tot_groups, dense_diff = [], 0, 0, 0
    for l in layers:
        p = f'model.layers.{l}.mlp.'
        ga, ua, da = A[p + 'gate_proj.weight'], A[p + 'up_proj.weight'], A[p + 'down_proj.weight']
        gb, ub, db = B[p + 'gate_proj.weight'], B[p + 'up_proj.weight'], B[p + 'down_proj.weight']
        f = ga.shape[0]
        k = ja['layers'][l]['dense']
        s = f - k
        m = match_rows(np.concatenate([ga, ua], 1), np.concatenate([gb, ub], 1))
        differing = int(((np.arange(f) >= s) != (m >= s)).sum())
        dense_diff += differing
        row = {'layer': l, 'dense_indices_differing': differing}
        same_l = groups_l = 0
        for name, wa, wb in (('gate', ga, gb), ('up', ua, ub)):
            eq = ((wa[:s] == 0) == (wb[m[:s]] == 0)).reshape(s, -1, 4).all(2)
            row[name] = float(eq.mean())
            same_l += int(eq.sum())
            groups_l += eq.size
        eq = ((da[:, :s] == 0) == (db[:, m[:s]] == 0)).reshape(da.shape[0], -1, 4).all(2)
        row['down'] = float(eq.mean())
        same_l += int(eq.sum())
        groups_l += eq.size
        row['agreement'] = same_l / groups_l
        rows.append(row)
        tot_same += same_l
        tot_groups += groups_l
    report = {'groups': tot_groups, 'agreeing': tot_same, 'agreement': tot_same / tot_groups,
              'dense_indices_differing': dense_diff, 'calibration_fingerprint': fa, 'layers': rows}
    for r in rows:
        print(f"layer {r['layer']:3d}: gate {100 * r['gate']:.2f}%  up {100 * r['up']:.2f}%  down {100 * r['down']:.2f}%  "
              f"dense indices differing {r['dense_indices_differing']}")
    print(f"overall: {tot_same} of {tot_groups} groups agree ({100 * tot_same / tot_groups:.2f}%), "
          f"{dense_diff} dense indices differ")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)


if __name__ == '__main__':
    main()
