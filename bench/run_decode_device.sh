#!/usr/bin/env bash
# The decode engine on the GPU machine of the device tool, from binaries built here in
# /work/main/build (the tests find fixtures, the CLI and ../shared at the paths compiled in, so
# /work/main becomes a link to the copy on that machine) and carried in $CARRY (default
# .carry-decode, git-ignored):
#   bin.tar.xz, libs.tar.xz             bench/pack_device_carry.sh build
#   shared/                             stories260K.bin, tok512.bin, tok512.model (its normalizer
#                                       flags change the tokens), tinystories-valid-1k.txt, wikitext2-test.raw
#   smollm2.part-*                      optional: the SmolLM2 GGUF split in parts (split -n 3), since
#                                       with the binaries it exceeds one call's carry; `stash` keeps the
#                                       parts of one call in /tmp/smol for the next calls on the same
#                                       machine (other carry folders bring the other parts)
# Steps:
#   stash     keep this call's SmolLM2 parts
#   tests     the engine and attention GPU tests (SmolLM2's too when it is assembled)
#   gputests  every GPU test (GEMMs, native 2:4 kernel, Spense MLP, pruning, engine, attention)
#   gemm      spense bench gemm at Qwen3-32B's MLP shapes, N 1 to 128, with the machine's cuSPARSELt
#   ncunative Nsight Compute's speed-of-light, occupancy and warp-stall sections of the native 2:4
#             kernel at N = 32 and 64, BF16 and FP8 (the first launches: the split-K search's)
#   ncusource Nsight Compute's warp-stall samples per SASS instruction of the FP8 wgmma 2:4 kernel
#             (NCU_KERNEL: wgmma_kernel, or wgmma_tma_kernel for the cluster kernel), Qwen3-32B
#             gate_up at N = NCU_N (default 1 32; the first launch of each: a search's, split 1),
#             summarized by bench/tools/ncu_stalls.py
#   ncuattention Nsight Compute's full sections and per-instruction stalls of the decode attention
#             kernel at context 0 in a 4-layer Qwen3-32B step, and the kernel alone by chunk size
#   smollm2   issue 6's check on SmolLM2 (SpenseGPT+ 25% pruned on the GPU and on the CPU from the same
#             tokens, masks compared, both evaluated)
#   generate  spense generate --compare-cpu on SmolLM2, dense and pruned on the GPU, BF16 and FP8, and
#             the engine's SmolLM2 test
#   bench     spense bench decode with the Qwen3-32B config
#   benchbf16 the same with BF16 weights
#   khalves   cuBLASLt alone: Qwen3-32B's down, o_proj and qkv with k whole against k's halves apart
#             (bench/tools/dense_k_halves.cu), FP8 at N 1, 16, 32, 64 and BF16 at N 1, 32
#   bench1    the same at batch 1 and context 0, FP8 and BF16 weights
#   profile   Nsight Compute's kernel durations of one timed step of a 4-layer Qwen3-32B (dense and
#             Spense MLPs at 37.5% sparsity, contexts 0 and 4096), to set against the step time (bench/tools/ncu_summary.py)
#   ab        this build's decode step against a base build's (carried as base-bin.tar.xz; and an
#             alternative's, alt-bin.tar.xz, when carried), in turn on
#             one machine start (AB_CTX, AB_SPARSITY, AB_BATCH, AB_DTYPE: default 0, 0,0.5, 32 and fp8)
#   abattention this build's bench attention against the base build's, in turn: Qwen3-32B's layer
#             (AB_SHAPE, default 32:64:8:128:4096: batch, heads, KV heads, head dim, max_ctx) at
#             lengths 1, 1024 and 4096, BF16 and FP8 out
#   abgemm    this build's bench gemm against the base build's, in turn (base, this, base, this) on
#             one machine start: Qwen3-32B's MLP shapes, N = AB_N (default 1,16,32,64), both dtypes,
#             the GEMMs and the MLPs at dense ratios AB_RATIOS (default 0) and 1
#   timeline  a kernel trace (CUPTI: bench/tools/kernel_trace.cpp) of Qwen3-32B's replayed steps at
#             context 0, batch 32 and 1, dense and 2:4 MLPs: each kernel's time where the step
#             runs it and the gap before it (bench/tools/step_timeline.py)
#   prune     issue 6's check on stories260K: prune on the CPU and on the GPU from the same tokens,
#             compare the masks (bench/tools/compare_pruned.py) and evaluate both (SmolLM2 in `smollm2`)
#   bigprune  issue 6's bounded memory: a random Llama-shaped checkpoint (hidden 4096, d_ff 11008, 40
#             layers: 7.1 B parameters, 13.2 GiB of BF16) pruned on the GPU while another process
#             holds all but 8 GiB of its memory
#   prunetests the GPU pruning and streaming tests against the CPU reference
# usage: bench/run_decode_device.sh STEP...
set -uo pipefail
carry=${CARRY:-.carry-decode}
OUT=${OUT:-/tmp/out}
source "$(dirname "$0")/device_env.sh"
smol=/tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf
root=$PWD

if [ "$(readlink -f /work/main)" != "$root" ]; then mkdir -p /work && ln -sfn "$root" /work/main; fi
if [ -f "$carry/bin.tar.xz" ]; then
    mkdir -p build /tmp/unpack /work/shared/models/stories260K /work/shared/data
    unxz_to "$carry/bin.tar.xz" /tmp/unpack/bin.tar && tar -C build -xf /tmp/unpack/bin.tar
    unxz_to "$carry/libs.tar.xz" /tmp/unpack/libs.tar && tar -C /tmp -xf /tmp/unpack/libs.tar
    cp "$carry"/shared/stories260K.bin "$carry"/shared/tok512.bin "$carry"/shared/tok512.model /work/shared/models/stories260K/
    cp "$carry"/shared/*.txt "$carry"/shared/*.raw /work/shared/data/
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    echo "cuSPARSELt: $(ls "$SYSTEM_CSLT"/libcusparseLt.so* | xargs -n1 basename | tr '\n' ' ')($SYSTEM_CSLT)"
fi
mkdir -p /tmp/smol "$OUT"
ls "$carry"/smollm2.part-* > /dev/null 2>&1 && cp "$carry"/smollm2.part-* /tmp/smol/
# Assembled once the parts carried so far give the file scripts/fetch_models.sh checks.
if [ ! -f "$smol" ] && ls /tmp/smol/smollm2.part-* > /dev/null 2>&1; then
    cat /tmp/smol/smollm2.part-* > "$smol.tmp"
    sum=$(sed -n 's/^model_sha256="\(.*\)"$/\1/p' scripts/fetch_models.sh)
    if echo "$sum  $smol.tmp" | sha256sum --check --status; then mv "$smol.tmp" "$smol"; else rm "$smol.tmp"; fi
fi
cli=/work/main/build/spense
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -o -m1 'H[0-9]\{3\}' | tr 'H' 'h')
gpu=${gpu:-gpu}  # names the result files: decode-h200.json, ...

# in_turn PATTERN ARGS...: `spense ARGS` of a base build (its bin.tar.xz carried as
# $carry/base-bin.tar.xz), of an alternative when one is carried (alt-bin.tar.xz) and of this one,
# in turn on one machine start (base, alt, this, base, alt, this), keeping the lines that match PATTERN.
in_turn() {
    [ -f "$carry/base-bin.tar.xz" ] || { echo "no $carry/base-bin.tar.xz"; return; }
    local pattern=$1 run build bin builds=base
    shift
    [ -f "$carry/alt-bin.tar.xz" ] && builds="base alt"
    for build in $builds; do
        mkdir -p /tmp/$build && unxz_to "$carry/$build-bin.tar.xz" /tmp/unpack/$build.tar && tar -C /tmp/$build -xf /tmp/unpack/$build.tar
    done
    for run in 1 2; do
        for build in $builds this; do
            bin=$cli; [ $build != this ] && bin=/tmp/$build/spense
            echo "== $build, run $run"
            timeout 200 "$bin" "$@" | grep "$pattern"
        done
    done
}

for step in "$@"; do
    start=$(date +%s)
    case $step in
    stash) ls -l /tmp/smol ;;
    tests)
        (cd /work/main/build && SPENSE_CACHE=/tmp/smol timeout 400 ./spense_tests --gtest_filter='GpuDecode*:*DecodeAttention*') 2>&1 |
            tee "$OUT/decode-tests.log" | grep -v '^\[ *\(RUN\|OK\) '
        ;;
    gputests)
        (cd /work/main/build && SPENSE_CACHE=/tmp/smol timeout 400 ./spense_tests --gtest_filter='*Gpu*:*Native*:*SparseGemm*:*DecodeAttention*') 2>&1 |
            grep -v '^prune: ' | tee "$OUT/gpu-tests.log" | grep -v '^\[ *\(RUN\|OK\) '
        ;;
    gemm)
        timeout 400 "$cli" bench gemm --models qwen3-32b --n 1,8,16,32,64,128 --budget-ms 20 --json "$OUT/gemm-$gpu.json" | tee "$OUT/gemm-$gpu.md"
        ;;
    ncunative)
        for t in bf16 fp8; do
            timeout 200 ncu --clock-control none -k regex:"mma_sync_kernel|wgmma_kernel" --launch-count 6 --section SpeedOfLight \
                --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
                "$cli" bench gemm --models qwen3-32b --n 32,64 --dtypes $t --ratios 0 --budget-ms 5 > "$OUT/ncu-native-$t.txt" 2>&1
            grep -E 'mma_sync_kernel|wgmma_kernel|Duration|Memory Throughput|DRAM Throughput|Registers Per|Achieved Occupancy|Grid Size|Stall' \
                "$OUT/ncu-native-$t.txt" | head -60
        done
        ;;
    ncusource)
        k=${NCU_KERNEL:-wgmma_kernel}
        for n in ${NCU_N:-1 32}; do
            nt=1; while [ $((nt * 8)) -lt $n ] && [ $nt -lt 8 ]; do nt=$((nt * 2)); done
            timeout 200 ncu --set full --clock-control none --kernel-name-base demangled --launch-count 1 -f -o /tmp/ncu-source-n$n \
                -k "regex:$k<\(spense::gpu::GemmDType\)1, \(int\)$nt>" \
                "$cli" bench gemm --models qwen3-32b --n $n --dtypes fp8 --ratios 0 --budget-ms 2 > /dev/null 2>&1
            ncu --import /tmp/ncu-source-n$n.ncu-rep --page source --csv --print-source sass > "$OUT/ncu-source-$k-fp8-n$n.csv"
            ncu --import /tmp/ncu-source-n$n.ncu-rep --page details | grep -E "^  [a-z]|Duration|DRAM Throughput" | head -4
            python3 bench/tools/ncu_stalls.py "$OUT/ncu-source-$k-fp8-n$n.csv" --top 12 | tee "$OUT/ncu-stalls-$k-fp8-n$n-$gpu.md"
        done
        ;;
    ncuattention)
        # The decode engine's attention kernel at context 0 (one key: latency, not bandwidth) inside
        # a 4-layer Qwen3-32B step, caches as the replayed step leaves them; then the kernel alone
        # at lengths 1 and 1024 with one and two chunks.
        python3 -c 'import json; c = json.load(open("configs/qwen3-32b.json")); c["num_hidden_layers"] = 4; json.dump(c, open("/tmp/qwen3-32b-4l.json", "w"))'
        timeout 200 ncu --set full --import-source no --graph-profiling node --cache-control none --clock-control none \
            --kernel-name-base demangled -k regex:decode_attention --launch-skip 2 --launch-count 1 -f -o /tmp/ncu-attention \
            "$cli" bench decode --config /tmp/qwen3-32b-4l.json --ctx 0 --sparsity 0 --steps 2 > /dev/null 2>&1
        ncu --import /tmp/ncu-attention.ncu-rep --page details > "$OUT/ncu-attention-details.txt"
        grep -E "Duration|Elapsed Cycles|SM Active Cycles|Achieved Occupancy|Theoretical Occupancy|Registers Per|Grid Size|Block Size|Dynamic Shared|Executed Ipc|Issue Slots|No Eligible|Active Warps Per|Eligible Warps" \
            "$OUT/ncu-attention-details.txt" | head -30
        ncu --import /tmp/ncu-attention.ncu-rep --page source --csv --print-source sass > "$OUT/ncu-attention-source.csv"
        python3 bench/tools/ncu_stalls.py "$OUT/ncu-attention-source.csv" --top 25 | tee "$OUT/ncu-attention-stalls-$gpu.md"
        "$cli" bench attention --lengths 1,1024 --chunks 0,4096 | tee "$OUT/attention-chunks-$gpu.md"
        ;;
    smollm2)
        [ -f "$smol" ] || { echo "SmolLM2 is not assembled in /tmp/smol"; continue; }
        calib=(--calib /work/shared/data/wikitext2-test.raw --range 0:0.5 --nsamples 64 --seqlen 512 --method spensegpt+ --sparsity 0.25)
        for dev in cuda cpu; do
            rm -rf /tmp/smol-$dev
            timeout 400 "$cli" prune --model "$smol" "${calib[@]}" --device $dev --out /tmp/smol-$dev 2>&1 | tail -2
        done
        python3 bench/tools/compare_pruned.py /tmp/smol-cuda /tmp/smol-cpu --json "$OUT/smollm2-agreement.json" | tail -2
        for m in /tmp/smol-cuda /tmp/smol-cpu; do
            "$cli" eval --model "$m" --data /work/shared/data/wikitext2-test.raw --range 0.875:1 --ctx 1024 2>/dev/null | tail -1
        done
        ;;
    prunetests)
        (cd /work/main/build && timeout 400 ./spense_tests --gtest_filter='GpuPrune*:*GpuPruneVsCpu*:*Streamed*') 2>&1 |
            tee "$OUT/gpu-prune-tests.log" | grep -v '^\[ *\(RUN\|OK\) '
        ;;
    bigprune)
        rm -rf /tmp/big /tmp/big-pruned /tmp/hog.ready
        python3 bench/tools/make_random_checkpoint.py /tmp/big --hidden 4096 --intermediate 11008 --layers 40 --heads 32 \
            --kv-heads 8 --vocab 512 | tail -1
        "$PY" -c '
import sys, time, torch
free, total = torch.cuda.mem_get_info()
keep = 8 << 30
hold = torch.empty(free - keep, dtype=torch.uint8, device="cuda")
print(f"another process holds {(free - keep) / 2**30:.1f} GiB of the {total / 2**30:.1f} GiB GPU, leaving 8 GiB", flush=True)
open("/tmp/hog.ready", "w").close()
time.sleep(900)' &
        hog=$!
        while [ ! -f /tmp/hog.ready ] && kill -0 $hog 2>/dev/null; do sleep 1; done
        nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader
        timeout 420 "$cli" prune --model /tmp/big --tokenizer /work/shared/models/stories260K/tok512.bin \
            --calib /work/shared/data/tinystories-valid-1k.txt --nsamples 32 --seqlen 512 --method spensegpt+ --sparsity 0.25 \
            --device cuda --out /tmp/big-pruned > "$OUT/bigprune.log" 2>&1
        echo "prune exit $?"
        kill $hog
        grep -v '^|' "$OUT/bigprune.log" | tail -4
        "$cli" inspect /tmp/big-pruned 2>&1 | tail -3
        du -sh /tmp/big /tmp/big-pruned
        ;;
    generate)
        [ -f "$smol" ] || { echo "SmolLM2 is not assembled in /tmp/smol"; continue; }
        prompt="The capital of France is Paris. The capital of Italy is"
        [ -d /tmp/smol-cuda ] || "$cli" prune --model "$smol" --calib /work/shared/data/wikitext2-test.raw --range 0:0.5 --nsamples 64 \
            --seqlen 512 --method spensegpt+ --sparsity 0.25 --device cuda --out /tmp/smol-cuda 2>&1 | tail -1
        for m in "$smol" /tmp/smol-cuda; do
            for t in bf16 fp8; do
                echo "== $(basename "$m") $t"
                "$cli" generate --model "$m" --prompt "$prompt" --tokens 24 --dtype $t \
                    --compare-cpu --json "$OUT/generate-$(basename "$m")-$t.json" 2>&1 | grep -v '^spense generate: '
            done
        done
        (cd /work/main/build && SPENSE_CACHE=/tmp/smol ./spense_tests --gtest_filter='GpuDecode.SmolLM2*') 2>&1 | grep -E '^\[ *(engine|PASSED|FAILED)'
        ;;
    profile)
        python3 -c 'import json; c = json.load(open("configs/qwen3-32b.json")); c["num_hidden_layers"] = 4; json.dump(c, open("/tmp/qwen3-32b-4l.json", "w"))'
                # Caches and clocks as a replayed step sees them: activations stay in L2 between kernels.
        timeout 300 ncu --profile-from-start off --graph-profiling node --cache-control none --clock-control none \
            --metrics gpu__time_duration.sum --csv \
            "$cli" bench decode --config /tmp/qwen3-32b-4l.json --ctx 0,4096 --sparsity 0,0.375 --steps 1 > "$OUT/ncu-4l.csv" 2> "$OUT/ncu-4l.err"
        python3 bench/tools/ncu_summary.py "$OUT/ncu-4l.csv" | tee "$OUT/ncu-4l.md"
        timeout 120 "$cli" bench decode --config /tmp/qwen3-32b-4l.json --ctx 0,4096 --sparsity 0,0.375 --steps 30 --json "$OUT/decode-4l.json" | tee "$OUT/decode-4l.md"
        ;;
    ab)
        in_turn '^| [0-9.]*% | [0-9.]* | [0-9]* |' bench decode --config configs/qwen3-32b.json --ctx ${AB_CTX:-0} \
            --sparsity ${AB_SPARSITY:-0,0.5} --batch ${AB_BATCH:-32} --dtype ${AB_DTYPE:-fp8} --steps 30 2>&1 | tee "$OUT/ab-${AB_DTYPE:-fp8}-$gpu.md"
        ;;
    abattention)
        in_turn '^| [0-9]* | [bf][fp][18]6* |' bench attention --shape ${AB_SHAPE:-32:64:8:128:4096} --lengths 1,1024,4096 --reps 100 2>&1 |
            tee "$OUT/abattention-$gpu.md"
        ;;
    abgemm)
        in_turn '^| qwen3-32b |' bench gemm --models qwen3-32b --n ${AB_N:-1,16,32,64} --ratios ${AB_RATIOS:-0} \
            --budget-ms 10 2>&1 | tee "$OUT/abgemm-$gpu.md"
        ;;
    timeline)
        # CUPTI's kernel records (bench/tools/kernel_trace.cpp), batch 32 then 1.
        for b in 32 1; do
            CUDA_INJECTION64_PATH=/work/main/build/libkernel_trace.so KERNEL_TRACE_CSV=/tmp/trace-b$b.csv timeout 200 "$cli" bench decode \
                --config configs/qwen3-32b.json --ctx 0 --sparsity 0,0.5 --batch $b --steps 10 > "$OUT/timeline-b$b-run.md" 2>&1
            python3 bench/tools/step_timeline.py --timed /tmp/trace-b$b.csv > "$OUT/timeline-b$b.md"
            grep '^| [0-9.]*% | [0-9.]* | 0 |' "$OUT/timeline-b$b-run.md"
        done
        ;;
    prune)
        calib=(--calib /work/shared/data/tinystories-valid-1k.txt --range 0:0.5 --nsamples 128 --seqlen 256 --align 4 --method spensegpt+ --sparsity 0.25)
        model=/work/shared/models/stories260K/stories260K.bin
        for dev in cpu cuda; do "$cli" prune --model $model "${calib[@]}" --device $dev --out /tmp/stories-$dev 2>&1 | tail -1; done
        python3 bench/tools/compare_pruned.py /tmp/stories-cuda /tmp/stories-cpu --json "$OUT/stories-agreement.json" | tail -3
        for dev in cpu cuda; do
            "$cli" eval --model /tmp/stories-$dev --data /work/shared/data/tinystories-valid-1k.txt --range 0.5:1 --ctx 256 2>/dev/null | tail -1
        done
        ;;
    bench)
        timeout 480 "$cli" bench decode --config configs/qwen3-32b.json --json "$OUT/decode-$gpu.json" | tee "$OUT/decode-$gpu.md"
        ;;
    khalves)
        { for n in 1 16 32 64; do build/dense_k_halves $n; done; for n in 1 32; do build/dense_k_halves $n bf16; done; } |
            tee "$OUT/dense-k-halves-$gpu.md"
        ;;
    benchbf16)
        timeout 480 "$cli" bench decode --config configs/qwen3-32b.json --dtype bf16 --json "$OUT/decode-bf16-$gpu.json" | tee "$OUT/decode-bf16-$gpu.md"
        ;;
    bench1)
        for t in fp8 bf16; do
            timeout 300 "$cli" bench decode --config configs/qwen3-32b.json --batch 1 --ctx 0 --dtype $t --json "$OUT/decode-b1-$t-$gpu.json" |
                tee "$OUT/decode-b1-$t-$gpu.md" | grep '^| [0-9.]*% |'
        done
        ;;
    esac
    echo "step $step: $(($(date +%s) - start)) s"
done
