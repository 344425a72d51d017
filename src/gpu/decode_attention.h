// Flash-decoding attention for the decode engine: one new query token per sequence against that
// sequence's KV cache, grouped KV heads (GQA), BF16 in, BF16 or per-row FP8 out.
//
// For sequence b with len = lengths[b] valid cache positions and query head h (KV head
// kv = h / G, G = n_heads / n_kv_heads):
//   keys  = [lo, len), lo = max(0, len - window) (window 0: lo = 0)
//   o[b, h] = sum_{j in keys} softmax_j(q[b, h] . k[b, kv, j] / sqrt(hd)) v[b, kv, j]
// with the softmax in float32 (exp2 of scores pre-multiplied by log2(e) / sqrt(hd)).
//
// How: the context is cut into fixed chunks of `chunk()` positions chosen at construction, so that
// the launches never depend on the lengths, which live on the device and change every step of a
// replayed CUDA graph. Pass 1 runs one block per (chunk, KV head, sequence, tile of up to 16 query
// heads); it streams the chunk's K and V once from device memory into shared memory (cp.async,
// three stages) and computes the scores and P V of all query heads of the group on tensor cores
// (mma.sync m16n8k16 BF16, the group's heads as the 16 rows), writing per head the chunk's
// normalized output and log2-sum-exp to the workspace. Blocks whose chunk holds no key of [lo, len)
// return at once. Pass 2, one block per sequence, merges the chunks that hold keys (the same rule,
// valid_chunks in the .cu) by log-sum-exp weights and writes the row.
// Folding pass 2 into pass 1 (the last block of a sequence, by a ticket counter, merges its row)
// was measured slower on the H100 at Qwen3-32B's shape, batch 32: 16.2 vs 13.7 us at length 1 and
// 212 vs 201.5 us at 4096, since a 128-thread block merging 8192 outputs sits on the critical path
// where 32 blocks of 1024 threads spread over the GPU.
//
// The GQA point: each K/V element is read from device memory once per (sequence, KV head) for up to
// 16 heads of its group (groups of more than 16 heads read it once per 16).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace spense::gpu {

using bf16 = __nv_bfloat16;

struct DecodeAttentionShape {
    int64_t batch = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
    int64_t max_ctx = 0;  // cache capacity per sequence
    int64_t window = 0;   // sliding window (attend to the last `window` positions), 0 = full causal
    int64_t chunk = 0;    // positions per pass-1 block: 0 = chosen from the shape and the GPU; else a multiple of 64
};

class DecodeAttention {
public:
    // Throws spense::Error for an unsupported shape: head_dim not one of 8, 16, 32, 64, 128, 256,
    // n_heads not a multiple of n_kv_heads, non-positive sizes, a negative window, a chunk that is
    // not a multiple of 64. Sets the kernels' shared-memory limits on the current device.
    DecodeAttention(const DecodeAttentionShape& shape, const cudaDeviceProp& props);

    const DecodeAttentionShape& shape() const { return shape_; }
    int64_t chunk() const { return chunk_; }
    int64_t splits() const { return splits_; }  // ceil(max_ctx / chunk)
    // Per-chunk partial outputs and log-sum-exps: batch * n_heads * splits * (head_dim + 1) floats.
    size_t workspace_bytes() const;

    // q [batch, n_heads, head_dim] BF16 (already RoPE'd, unscaled); k, v: one layer's cache,
    // [batch, n_kv_heads, max_ctx, head_dim] BF16 (q, k, v 16-byte aligned); lengths [batch] int32 ON
    // THE DEVICE, 1 <= len <= max_ctx: positions [0, len) are valid (the current token was already
    // written at len - 1). Positions past len are never read, so the cache may hold anything there.
    // Output row b = concat over heads of o[b, h], either BF16 `values` [batch, n_heads * head_dim],
    // or (when fp8 != nullptr) FP8 E4M3 codes fp8[b, :] = e4m3(o[b, :] / s_b) with the per-row scale
    // s_b = amax_b / 448 (1 when amax is 0) written to row_scale[b], rounded as in kernels.h.
    struct Output {
        bf16* values = nullptr;
        uint8_t* fp8 = nullptr;
        float* row_scale = nullptr;
    };
    // Two kernel launches on `stream`, configured by the shape alone (capturable in a CUDA graph and
    // replayable with new lengths), each with programmatic dependent launch (launch.h). `workspace`: workspace_bytes(), 16-byte aligned.
    void run(const bf16* q, const bf16* k, const bf16* v, const int32_t* lengths, const Output& out, void* workspace,
             cudaStream_t stream) const;

private:
    DecodeAttentionShape shape_;
    int64_t chunk_ = 0, splits_ = 0, head_tiles_ = 0;
    size_t split_smem_ = 0, combine_smem_ = 0;
};

}  // namespace spense::gpu
