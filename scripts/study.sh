#!/usr/bin/env bash
# The accuracy study of docs/results.md: every method and ablation on stories260K (TinyStories)
# and SmolLM2-135M (WikiText-2 and TinyStories), calibrating on the first half of a text and
# evaluating on held-out later parts (the last eighth for SmolLM2, so the study fits in two hours
# on a 2-core machine). Resumable: a run whose JSON exists is skipped.
#
#   scripts/study.sh [stories260k|smollm2|all] [OUT_DIR]   (default: all, study-results/)
#
# Then `python3 scripts/study_table.py OUT_DIR` prints the tables of docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
out=${2:-study-results}
spense=${SPENSE_BIN:-./build/spense}
shared=${SPENSE_SHARED:-../shared}
cache=${SPENSE_CACHE:-$HOME/.cache/spense}
tiny=$shared/data/tinystories-valid-1k.txt
wiki=$shared/data/wikitext2-test.raw
mkdir -p "$out"

# study_model TAG MODEL CALIB_ARGS EVALS [NAME PRUNE_ARGS]...: prune each run (except "original"),
# then evaluate it on each EVALS entry (data,range,ctx).
study_model() {
    local tag=$1 model=$2 calib_args=$3 evals=$4
    shift 4
    local name method_args
    while (($#)); do
        name=$1 method_args=$2
        shift 2
        local pruned=$model
        if [[ $name != original ]]; then
            pruned=$out/$tag-$name
            if [[ ! -f $out/$tag-$name.prune.log ]]; then
                rm -rf "$pruned"
                # shellcheck disable=SC2086
                $spense prune --model "$model" $calib_args $method_args --out "$pruned" > "$out/$tag-$name.prune.log.tmp"
                mv "$out/$tag-$name.prune.log.tmp" "$out/$tag-$name.prune.log"
            fi
        fi
        local e
        for e in $evals; do
            local data range ctx
            IFS=, read -r data range ctx <<< "$e"
            local json=$out/$tag-$name.eval-$(basename "$data" | cut -d- -f1).json
            [[ -f $json ]] && continue
            $spense eval --model "$pruned" --data "$data" --range "$range" --ctx "$ctx" --json "$json" > /dev/null
        done
    done
}

# NAME / prune-arguments pairs of every run; $1 is the alignment of the dense count.
set_runs() {
    local a=$1
    runs=(original ""
          magnitude-2:4 "--method magnitude --sparsity 0.5"
          wanda-2:4 "--method wanda --sparsity 0.5"
          sparsegpt-2:4 "--method sparsegpt --sparsity 0.5"
          sparsegpt-unstructured-50 "--method sparsegpt --pattern unstructured --sparsity 0.5"
          spensegpt-37.5 "--method spensegpt --sparsity 0.375 --align $a"
          spensegpt-25 "--method spensegpt --sparsity 0.25 --align $a"
          spensegpt+-37.5 "--method spensegpt+ --sparsity 0.375 --align $a"
          spensegpt+-25 "--method spensegpt+ --sparsity 0.25 --align $a"
          spensegpt+-25-score-sparsegpt "--method spensegpt+ --sparsity 0.25 --align $a --score sparsegpt"
          spensegpt+-25-layout-front "--method spensegpt+ --sparsity 0.25 --align $a --layout front"
          spensegpt+-25-layout-inplace "--method spensegpt+ --sparsity 0.25 --align $a --layout inplace")
}

if [[ $which == stories260k || $which == all ]]; then
    set_runs 4
    study_model stories260k "$shared/models/stories260K/stories260K.bin" \
        "--calib $tiny --range 0:0.5 --nsamples 128 --seqlen 256" \
        "$tiny,0.5:1,256" "${runs[@]}"
fi
if [[ $which == smollm2 || $which == all ]]; then
    set_runs 128
    study_model smollm2 "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" \
        "--calib $wiki --range 0:0.5 --nsamples 64 --seqlen 512" \
        "$wiki,0.875:1,1024 $tiny,0.875:1,1024" "${runs[@]}"
fi
