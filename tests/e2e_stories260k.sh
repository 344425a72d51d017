#!/usr/bin/env bash
# End to end on the real stories260K model: prune with SparseGPT 2:4 and SpenseGPT+ at 25%,
# check the SpenseGPT+ result with `spense inspect` (exactly 2:4 where spense.json says) and
# `spense eval`, and require original < SpenseGPT+ 25% < SparseGPT 2:4 in perplexity.
# Calibration: first half of the TinyStories text; evaluation: second half.
set -euo pipefail
spense="$1"
shared="${SPENSE_SHARED:-$(dirname "$0")/../../shared}"
model="$shared/models/stories260K/stories260K.bin"
text="$shared/data/tinystories-valid-1k.txt"
if [[ ! -f "$model" ]]; then
    echo "shared models not found at $model"
    exit 77  # skipped
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

calib=(--calib "$text" --range 0:0.5 --nsamples 64 --seqlen 256 --align 4)
eval_args=(--data "$text" --range 0.5:1 --ctx 256)
ppl() { "$spense" eval --model "$1" "${eval_args[@]}" --json "$work/eval.json" > /dev/null 2>&1
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["perplexity"])' "$work/eval.json"; }

"$spense" prune --model "$model" "${calib[@]}" --method sparsegpt --sparsity 0.5 --out "$work/sparsegpt" > /dev/null
"$spense" prune --model "$model" "${calib[@]}" --method spensegpt+ --sparsity 0.25 --out "$work/spense25" > /dev/null
"$spense" inspect "$work/spense25" > "$work/inspect.txt"
grep -q "every layer matches spense.json" "$work/inspect.txt"
grep -q "| 4 | \[84, 172) | yes |" "$work/inspect.txt"

original=$(ppl "$model")
spense25=$(ppl "$work/spense25")
sparsegpt=$(ppl "$work/sparsegpt")
echo "perplexity: original $original, spensegpt+ 25% $spense25, sparsegpt 2:4 $sparsegpt"
python3 -c 'import sys; a, b, c = map(float, sys.argv[1:]); sys.exit(0 if a < b < c else 1)' "$original" "$spense25" "$sparsegpt"
