// The elementwise pieces of one decoder layer's forward on the GPU (the matrix products are
// cuBLAS's, gpu_pruner.cpp), each the float32 formula of the CPU forward (model/transformer.cpp):
// RMSNorm with the sum of squares in float64, per-head q/k RMSNorm (Qwen3), half-split RoPE from
// cos/sin tables computed in float64 on the host, SwiGLU, and causal GQA attention.
//
// Activations are row-major [rows, width]; rows are `samples` sequences of T tokens each, so the
// position of row r is r % T.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace spense::gpu {

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w.
void launch_rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, double eps, cudaStream_t stream);
// The same over each head_dim slice of each row, in place (Qwen3's q_norm / k_norm).
void launch_head_rms_norm(float* x, const float* w, int64_t rows, int64_t cols, int64_t head_dim, double eps, cudaStream_t stream);
// Pair i of each head, (i, i + hd/2), rotated by the angle of (position, i): tables [T, hd/2].
void launch_rope(float* x, const float* cos, const float* sin, int64_t rows, int64_t cols, int64_t head_dim, int64_t T,
                 cudaStream_t stream);
// y[r, :] += b.
void launch_add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream);
// g = silu(g) * u, silu(v) = v / (1 + exp(-v)).
void launch_swiglu(float* g, const float* u, int64_t n, cudaStream_t stream);
// x += y.
void launch_add(float* x, const float* y, int64_t n, cudaStream_t stream);
// partial[2r] = sum_j (a - b)^2, partial[2r + 1] = sum_j b^2 of row r, in float64.
void launch_row_diff_norms(const float* a, const float* b, int64_t rows, int64_t cols, double* partial, cudaStream_t stream);

// Causal attention with grouped KV heads, streaming over key tiles with an online softmax (no
// score matrix is formed, so memory is linear in T):
//   o[t, h] = sum_{s in keys(t)} softmax_s(scale q[t, h] . k[s, h / (H / KV)]) v[s, h / (H / KV)]
// keys(t) = [max(0, t - window + 1), t] (window 0: [0, t]); per sample of T rows.
// q, o [samples * T, H * hd]; k, v [samples * T, KV * hd]; hd <= 256.
struct AttentionShape {
    int64_t samples = 0, T = 0, heads = 0, kv_heads = 0, head_dim = 0, window = 0;
};
void launch_attention(const float* q, const float* k, const float* v, float* o, const AttentionShape& s, cudaStream_t stream);

}  // namespace spense::gpu
