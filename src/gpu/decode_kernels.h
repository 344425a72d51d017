// The steps of a decode step (decode_engine.h) between its GEMMs and its attention: embedding,
// residual add + RMSNorm + quantization, SwiGLU + quantization, greedy sampling (q/k norm, RoPE
// and the KV-cache append are part of the attention kernel, decode_attention.h). Host launchers;
// each checks its launch and throws spense::Error with the kernel's name and sizes. The kernels between a layer's GEMMs are launched with
// programmatic dependent launch (launch.h). Row r of every activation is sequence r of the batch.
// They are bound by latency and leave the memory bus idle; having them (or a kernel beside them on
// a forked stream) prefetch the next GEMM's weight into L2 (cp.async.bulk.prefetch.L2) was
// measured slower on the H200: 11.29 -> 11.62 ms per dense Qwen3-32B step at batch 32, as these
// kernels slowed by more than the GEMMs gained (bench/README.md).
//
// Scaling convention. A GEMM writes raw products R[r, j] (gemm.h; BF16 or float32); their value is
//   Y[r, j] = (sum_p R_p[r, j]) * row_scale[r] * col_scale[j] + bias[j]   (R_p: the parts, usually one)
// with row_scale the per-token scale of the activation the GEMM read and col_scale the weight's
// per-output-channel scale (FP8), `ScaledRows`; a null pointer means 1 (or no bias), so BF16
// GEMMs, whose outputs are values, pass none. An activation that feeds a GEMM is written as FP8
// codes e4m3(a[r, :] / s_r) with one scale per token, s_r = max_c |a[r, c]| / 448 (1 for a zero
// row), stored in row_scale[r]; or as BF16 (no scale), `ActOut`. Per-token scales keep one outlier
// token from flattening the others, and each kernel here sees whole rows, so they cost no extra
// pass over memory. Rows [n, rows) of an ActOut are written as zeros (the sparse GEMMs' row
// granule, spense_mlp.h).
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gpu/gemm_dtype.h"
#include "gpu/kernels.h"

namespace spense::gpu {

struct ScaledRows {
    const void* raw = nullptr;  // BF16, or float32 with f32
    int64_t ld = 0;             // row stride in elements
    const float* row_scale = nullptr;
    const float* col_scale = nullptr;
    const float* bias = nullptr;
    // The raw products as parts.count blocks parts.stride elements apart from raw, of the same
    // scales, layout and type, added before scaling: the parts of k a GEMM wrote apart (gemm.h) and,
    // in the Spense MLP's down, the dense region's product after the 2:4 region's
    // (GpuSpenseMlp::down_products). At most kMaxKParts.
    ProductParts parts;
    bool f32 = false;  // the products are float32 (GemmOut::F32)

    // Y[r, j] of products in one part, read in device code (the pointers are the device's): the
    // readers of qkv and the logits, whose launchers check it (add_norm_quantize sums the parts).
    // The kernels take the products' type as a template argument F32 (== f32, with_product_type),
    // so that it puts no branch between their loads: read at run time instead, it slowed the
    // batch-32 FP8 step of Qwen3-32B on the H200 from 10.80 to 11.07 ms (and a loop over the parts
    // here, 10.28 to 11.20 ms: the attention kernel's reads of qkv took 0.82 ms against 0.46).
    template <bool F32>
    SPENSE_HOST_DEVICE float value(int64_t r, int64_t j) const {
        float v = product<F32>(raw, r * ld + j);
        if (row_scale) v *= row_scale[r];
        if (col_scale) v *= col_scale[j];
        if (bias) v += bias[j];
        return v;
    }
    template <bool F32>
    SPENSE_HOST_DEVICE static float product(const void* p, int64_t i) {
        if constexpr (F32)
            return static_cast<const float*>(p)[i];
        else
            return __bfloat162float(static_cast<const bf16*>(p)[i]);
    }
};

// f(std::bool_constant<rows.f32>{}): launchers pick their kernel's instance with it.
template <class F>
auto with_product_type(const ScaledRows& rows, F&& f) {
    return rows.f32 ? f(std::true_type{}) : f(std::false_type{});
}

struct ActOut {
    GemmDType dtype = GemmDType::BF16;
    void* data = nullptr;          // [rows, ld] BF16 or FP8 codes
    int64_t ld = 0;
    float* row_scale = nullptr;    // [rows], FP8 only
};

// x[r, :] = float(table[tokens[r], :]) for r < n; table [vocab, d] BF16. Token ids are trusted
// (the host checks prompts; sampling yields ids < vocab).
void launch_embed(const int32_t* tokens, const bf16* table, float* x, int64_t n, int64_t d, cudaStream_t stream);

// The residual stream x [n, d] float32 takes the pending sublayer output, then feeds the next
// GEMM:  x += add (when add.raw is set);  out = quantize(x / sqrt(mean(x^2) + eps) * norm_weight).
// d a multiple of 4, at most 98304. Each row runs on a cluster of up to 8 CTAs (the reductions
// through distributed shared memory), so that a small batch still spreads over the SMs. The kernel
// reads norm_weight before it waits for its predecessor (launch.h): no kernel may write it.
void launch_add_norm_quantize(float* x, const ScaledRows& add, const float* norm_weight, float eps, int64_t n, int64_t rows,
                              int64_t d, const ActOut& out, cudaStream_t stream);

// z = silu(gate) * up over the Spense intermediate layout (kernels.h's SwigluLayout), h given as
// ScaledRows over [n, 2(s_p + k_p)], then quantized into z [rows, s_p + k_p]; s_p + k_p is at most
// 98304. A row runs on a cluster of CTAs, as in launch_add_norm_quantize.
void launch_swiglu_quantize(const ScaledRows& h, SwigluLayout layout, int64_t n, int64_t rows, const ActOut& z, cudaStream_t stream);

// Greedy sampling: tokens[r] = argmax_j logits[r, j] (the lowest j among equal maxima), then
// lengths[r] += 1, so that the next step appends the sampled token. `best` [n] is scratch.
void launch_argmax_advance(const ScaledRows& logits, int64_t n, int64_t vocab, unsigned long long* best, int32_t* tokens,
                           int32_t* lengths, cudaStream_t stream);

// out [n, vocab] float32 = the logits' values (for comparisons with the CPU forward).
void launch_logits_f32(const ScaledRows& logits, int64_t n, int64_t vocab, float* out, cudaStream_t stream);

}  // namespace spense::gpu
