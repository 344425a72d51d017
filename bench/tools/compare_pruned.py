"""Compares two pruned checkpoints of one model (e.g. `spense prune --device cuda` against
`--device cpu`): how many 2:4 groups of the MLP weights have the same mask.

    python3 bench/tools/compare_pruned.py GPU_DIR CPU_DIR

Both directories hold spense's output (model.safetensors in F32, spense.json). Two figures:
- groups in runtime order: the masks compared position by position;
- groups after alignment: the two runs may choose dense sets that differ by a few near-tied
  indices, which shifts every later position of the runtime layout, so each intermediate index of
  the first run is matched to the index of the second whose gate and up rows are nearest (the same
  source index), and the groups are compared through that matching. Pure Python: for small models.
"""
import json, struct, sys, array
def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8+n]); base = 8 + n; out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        assert v['dtype'] == 'F32', v['dtype']
        s, e = v['data_offsets']; a = array.array('f'); a.frombytes(b[base+s:base+e]); out[k] = (v['shape'], a)
    return out
a, b = load(sys.argv[1] + '/model.safetensors'), load(sys.argv[2] + '/model.safetensors')
sj = json.load(open(sys.argv[1] + '/spense.json')); f = sj['intermediate_size']; k = sj['dense_count']; s = f - k
tot = same = 0; rel_num = rel_den = 0.0
for name in sorted(a):
    if 'mlp' not in name: continue
    (rows, cols), x = a[name]; y = b[name][1]
    down = 'down_proj' in name
    for r in range(rows):
        if not down and r >= s: continue
        for c in range(0, s if down else cols, 4):
            tot += 1
            same += all((x[r*cols+c+i] == 0) == (y[r*cols+c+i] == 0) for i in range(4))
    for i in range(len(x)): rel_num += (x[i]-y[i])**2; rel_den += y[i]**2
print(json.dumps({"groups": tot, "agreeing": same, "agreement": same/tot, "weights_rel_diff": (rel_num/rel_den)**0.5}))
tot = same = 0; dense_diff = 0; rel_num = rel_den = 0.0
layers = sorted({n.split('.mlp')[0] for n in a if 'mlp' in n})
for L in layers:
    g = L + '.mlp.gate_proj.weight'; u = L + '.mlp.up_proj.weight'; d = L + '.mlp.down_proj.weight'
    (f_, dm), ga = a[g]; gb = b[g][1]; ua = a[u][1]; ub = b[u][1]; da = a[d][1]; db = b[d][1]
    rowa = [list(ga[r*dm:(r+1)*dm]) + list(ua[r*dm:(r+1)*dm]) for r in range(f_)]
    rowb = [list(gb[r*dm:(r+1)*dm]) + list(ub[r*dm:(r+1)*dm]) for r in range(f_)]
    match = []
    for r in range(f_):
        best = min(range(f_), key=lambda q: sum((x-y)**2 for x, y in zip(rowa[r], rowb[q])))
        match.append(best)
    assert len(set(match)) == f_, "alignment is not a permutation"
    dense_diff += sum(1 for r in range(f_) if (r >= s) != (match[r] >= s))
    for r in range(s):  # gate/up sparse rows
        for W, V in ((ga, gb), (ua, ub)):
            for c in range(0, dm, 4):
                tot += 1; same += all((W[r*dm+c+i] == 0) == (V[match[r]*dm+c+i] == 0) for i in range(4))
    # down: columns in runtime order; groups of 4 GPU sparse positions vs the CPU columns they match
    for r in range(dm):
        for c in range(0, s, 4):
            tot += 1; same += all((da[r*f_+c+i] == 0) == (db[r*f_+match[c+i]] == 0) for i in range(4))
    for r in range(f_):
        for W, V in ((ga, gb), (ua, ub)):
            for c in range(dm): rel_num += (W[r*dm+c]-V[match[r]*dm+c])**2; rel_den += V[match[r]*dm+c]**2
print(json.dumps({"aligned_groups": tot, "aligned_agreeing": same, "aligned_agreement": same/tot, "dense_indices_differing": dense_diff, "gate_up_rel_diff_aligned": (rel_num/rel_den)**0.5}))
