#!/usr/bin/env bash
# GPU pruning on the GPU machine of the device tool, from binaries built here (same x86-64, CUDA
# 13.0) and carried in $CARRY (default .carry-prune, git-ignored):
#   bin.tar.xz     spense and spense_tests from a build of this checkout at /work/main (the tests'
#                  compiled-in source dir is recreated there as a link to the copy on that machine)
#   libs.tar.xz    a folder libs/ of shared libraries the GPU machine lacks (OpenBLAS, PCRE2, utf8proc)
#   stories260K.bin, tok512.bin, tok512.model, tinystories-valid-1k.txt   the end-to-end model (tok512.model
#                  sets the tokenizer's normalizer flags: without it the calibration tokens differ) and text
# Steps: the GPU pruning tests; stories260K pruned with --device cuda (its checkpoint comes back
# for comparison with a CPU run) and resumed after interruptions at a layer boundary and inside a
# layer (checkpoints compared by sha256); `spense bench prune` at Qwen3-32B layer shapes.
#
# usage: bench/run_prune_device.sh [tests] [e2e] [bench] [bench-long]   (no argument: the first three;
#        bench: 128 x 2048 tokens, bench-long: 16 x 16384 scaled to 128)
set -uo pipefail
carry=${CARRY:-.carry-prune}
OUT=${OUT:-/tmp/out}
steps=${*:-tests e2e bench}
source "$(dirname "$0")/device_env.sh"

root=$PWD
if [ "$(readlink -f /work/main)" != "$root" ]; then mkdir -p /work && ln -sfn "$root" /work/main; fi
mkdir -p build /tmp/unpack "$OUT"
unxz_to "$carry/bin.tar.xz" /tmp/unpack/bin.tar && tar -C build -xf /tmp/unpack/bin.tar
unxz_to "$carry/libs.tar.xz" /tmp/unpack/libs.tar && tar -C /tmp -xf /tmp/unpack/libs.tar
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

calib=(--calib "$carry/tinystories-valid-1k.txt" --range 0:0.5 --nsamples 128 --seqlen 256 --align 4 --method spensegpt+ --sparsity 0.25)
mkdir -p /tmp/e2e
prune() { build/spense prune --model "$carry/stories260K.bin" "${calib[@]}" --device cuda "$@"; }

for step in $steps; do
    start=$(date +%s)
    case $step in
    tests)
        timeout 240 build/spense_tests --gtest_filter="*GpuPrune*:GpuAttention*:Resume*" 2>&1 | grep -v '^prune: ' | tee "$OUT/gpu-prune-tests.log" |
            grep -v '^\[ *\(RUN\|OK\) '
        ;;
    e2e)
        prune --out /tmp/e2e/gpu
        for cut in after:1 in:3; do
            SPENSE_TEST_ABORT=$cut prune --out /tmp/e2e/cut-$cut > /dev/null 2>&1
            echo "interrupted at $cut: $(ls /tmp/e2e/cut-$cut.partial)"
            prune --out /tmp/e2e/cut-$cut --resume > /dev/null 2>&1
        done
        sha256sum /tmp/e2e/gpu/model.safetensors /tmp/e2e/cut-*/model.safetensors | tee "$OUT/resume-sha256.txt"
        tar -C /tmp/e2e -cf "$OUT/stories-gpu.tar" gpu
        ;;
    bench)
        timeout 240 build/spense bench prune --json "$OUT/prune-h100-2048.json" | tee "$OUT/prune-h100-2048.md"
        ;;
    bench-long)
        timeout 200 build/spense bench prune --seqlen 16384 --nsamples 16 --json "$OUT/prune-h100-16384.json" | tee "$OUT/prune-h100-16384.md"
        ;;
    esac
    echo "step $step: $(($(date +%s) - start)) s"
done
