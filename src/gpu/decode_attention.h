// Flash-decoding attention for the decode engine, one kernel per layer's step: from the fused
// q|k|v GEMM output of one new token per sequence, the query and key heads' RMSNorm (Qwen3) and
// RoPE, the append of the new key and value to the BF16 KV cache, and attention with grouped KV
// heads (GQA) over the cache; BF16 or per-row FP8 out.
//
// For sequence b with len = lengths[b] (the new token at position p = len - 1) and query head h
// (KV head kv = h / G, G = n_heads / n_kv_heads):
//   q_h = rope_p(norm_q(Y[b, head h])), k[b, kv, p] = rope_p(norm_k(Y[b, head H + kv])),
//   v[b, kv, p] = Y[b, head H + KV + kv]   (Y: the ScaledRows value of the GEMM output, head i its
//   columns [i hd, (i + 1) hd); norm(x) = x / sqrt(mean(x^2) + eps) * weight, when a weight is
//   given; rope_p rotates the pairs (i, i + hd / 2) by the angle whose (cos, sin) is rope[p, i])
//   keys  = [lo, len), lo = max(0, len - window) (window 0: lo = 0)
//   o[b, h] = sum_{j in keys} softmax_j(q_h . k[b, kv, j] / sqrt(hd)) v[b, kv, j]
// with q, k and v rounded to BF16 (as the cache holds them) and the softmax in float32 (exp2 of
// scores pre-multiplied by log2(e) / sqrt(hd)).
//
// How: the context is cut into fixed chunks of `chunk()` positions chosen at construction, so that
// the launch never depends on the lengths, which live on the device and change every step of a
// replayed CUDA graph. One block per (chunk, KV head, sequence, tile of up to 16 query heads)
// computes its query heads from the GEMM output (and, in the chunk holding p, the new key and
// value: written to the cache by the first head tile, placed straight into the block's last tile),
// streams the chunk's K and V once from device memory into shared memory (a producer warp issuing
// cp.async into three stages, mbarriers between it and four consumer warps) and computes the scores
// and P V of all query heads of the tile on tensor cores (mma.sync m16n8k16 BF16, the heads as the
// 16 rows). Blocks whose chunk holds no key of [lo, len) return at
// once. The results are combined in the same launch, by the blocks that finish last (ticket
// counters in the workspace): when a sequence's keys span several chunks, each block writes its
// chunk's normalized output and log2-sum-exp, and the last block of the (sequence, head tile)
// merges the chunks by log-sum-exp weights. FP8 output is scaled per row by a bound of |o| that
// every block knows from the start (the largest |v| of the row's cache), so no block waits for
// another to quantize.
// (Before, a second kernel merged and quantized, and a third before both did the norms, RoPE and
// the append: per layer of Qwen3-32B at batch 32 on the H200, context 0, a decode step spent
// 12 + 4 us in them against 11 us in this kernel; bench/README.md.)
//
// The GQA point: each K/V element is read from device memory once per (sequence, KV head) for up to
// 16 heads of its group (groups of more than 16 heads read it once per 16).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gpu/decode_kernels.h"

namespace spense::gpu {

using bf16 = __nv_bfloat16;

struct DecodeAttentionShape {
    int64_t batch = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
    int64_t max_ctx = 0;  // cache capacity per sequence
    int64_t window = 0;   // sliding window (attend to the last `window` positions), 0 = full causal
    int64_t chunk = 0;    // positions per block: 0 = chosen from the shape and the GPU; else a multiple of 64
};

// The chunk (positions per block) chosen for a cache of max_ctx positions, `units` blocks per
// chunk (sequences x KV heads x tiles of up to 16 query heads) and a GPU that holds `slots` blocks
// at once: the cost model of decode_attention.cu. A multiple of 64, at least min(512, max_ctx
// rounded up to 64), at most 128 chunks.
int64_t decode_attention_chunk(int64_t max_ctx, int64_t units, int64_t slots);

class DecodeAttention {
public:
    // Throws spense::Error for an unsupported shape: head_dim not one of 8, 16, 32, 64, 128, 256,
    // n_heads not a multiple of n_kv_heads, non-positive sizes, a negative window, a chunk that is
    // not a multiple of 64. Sets the kernels' shared-memory limits on the current device.
    DecodeAttention(const DecodeAttentionShape& shape, const cudaDeviceProp& props);

    const DecodeAttentionShape& shape() const { return shape_; }
    int64_t chunk() const { return chunk_; }
    int64_t splits() const { return splits_; }  // ceil(max_ctx / chunk)
    // The chunks' partial results and ticket counters: zeroed once before the first run (every run
    // leaves its counters zero again).
    size_t workspace_bytes() const;

    // The new token's q|k|v GEMM output and what turns it into heads: qkv over [batch,
    // (n_heads + 2 n_kv_heads) head_dim]; q_norm, k_norm [head_dim] float or null (no norm); rope
    // [max_ctx, head_dim / 2] (cos, sin) pairs or null (no rotation).
    struct Input {
        ScaledRows qkv;
        const float* q_norm = nullptr;
        const float* k_norm = nullptr;
        float eps = 0;
        const float2* rope = nullptr;
    };
    // k, v: one layer's cache, [batch, n_kv_heads, max_ctx, head_dim] BF16, 16-byte aligned;
    // lengths [batch] int32 ON THE DEVICE, 1 <= len <= max_ctx: positions [0, len - 1) hold the
    // earlier tokens, position len - 1 receives the new one. Positions past len are never read, so
    // the cache may hold anything there. Output row b = concat over heads of o[b, h] (16-byte
    // aligned), either BF16 `values` [batch, n_heads * head_dim], or (when fp8 != nullptr) FP8 E4M3 codes
    // fp8[b, :] = e4m3(o[b, :] / s_b), rounded as in kernels.h, with the per-row scale written to
    // row_scale[b]:
    //   s_b = (1 + 2^-7) B_b / 448 (1 when B_b is 0),  B_b = max(max_kv v_bound[b, kv], |new v of b|)
    // where v_bound [batch, n_kv_heads] (FP8 only; the same layer's, like k and v) holds an upper
    // bound of |v| over each KV head's cache: 0 for an empty cache, raised by each run to cover the
    // value it appends (a caller that fills a cache itself sets it). Since o is a convex combination
    // of V rows, s_b >= amax_b / 448: nothing saturates, and E4M3 keeps its relative precision for
    // every value above 3.5e-5 B_b (decode_attention.cu).
    struct Output {
        bf16* values = nullptr;
        uint8_t* fp8 = nullptr;
        float* row_scale = nullptr;
    };
    // One kernel launch on `stream`, configured by the shape alone (capturable in a CUDA graph and
    // replayable with new lengths), with programmatic dependent launch (launch.h). `workspace`:
    // workspace_bytes(), 16-byte aligned, for one run at a time.
    void run(const Input& in, bf16* k, bf16* v, float* v_bound, const int32_t* lengths, const Output& out, void* workspace,
             cudaStream_t stream) const;

private:
    DecodeAttentionShape shape_;
    int64_t chunk_ = 0, splits_ = 0, head_tiles_ = 0;
    size_t smem_ = 0;
};

}  // namespace spense::gpu
