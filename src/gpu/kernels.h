// The elementwise kernels of the GPU Spense MLP (the GEMMs are the libraries', gemm.h), and the
// random fills, L2 flush and delayed copy that searches, probes and benchmarks use. Host
// launchers; each checks its launch and throws spense::Error with the kernel's name and sizes.
//
// FP8 is OCP E4M3 (largest finite 448), converted with round-to-nearest-even and saturation to
// +-448 (__nv_cvt_float_to_fp8 with __NV_SATFINITE). A per-tensor activation scale is
//   s = amax / 448 (s = 1 when amax = 0), and q = e4m3(x / s),
// so the largest |x| maps to 448. Dynamic scaling computes amax on the GPU in the same stream
// (launch_amax_* then launch_quantize_* / launch_swiglu_fp8); static scaling passes s.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gpu/gemm_dtype.h"

namespace spense::gpu {

using bf16 = __nv_bfloat16;

// x rounded up to a multiple of a (a > 0), in x's type: paddings of rows, columns and buffer sizes.
template <class T, class A>
constexpr T round_up(T x, A a) {
    return (x + T(a) - 1) / T(a) * T(a);
}

constexpr float kE4M3Max = 448.0f;

// Where a freshly computed activation scale s is written: the scale itself, and column_scale[j] =
// w_scale[j] * s, the factor of output column j of the FP8 GEMMs that read the activation (their
// outputs are raw products of E4M3 codes, gemm.h).
struct ScaleTargets {
    float* scale = nullptr;
    float* column_scale = nullptr;
    const float* w_scale = nullptr;
    int64_t columns = 0;
};

// The intermediate layout of the Spense MLP (spense_mlp.h), padded region widths s_p and k_p:
//   h [rows, 2(s_p + k_p)] = [gate_sparse | up_sparse | gate_dense | up_dense]  (BF16)
//   z [rows, s_p + k_p]    = [z_sparse | z_dense]
// Both widths are multiples of 8.
#ifdef __CUDACC__
#define SPENSE_HOST_DEVICE __host__ __device__
#else
#define SPENSE_HOST_DEVICE
#endif
struct SwigluLayout {
    int64_t sparse = 0, dense = 0;
    SPENSE_HOST_DEVICE int64_t z_width() const { return sparse + dense; }
    SPENSE_HOST_DEVICE int64_t h_width() const { return 2 * (sparse + dense); }
};

// *amax_bits = the bits of max |x| over `count` elements (non-negative floats order like their
// bits, so atomicMax on the bits is a float max). Resets *amax_bits first.
void launch_amax_bf16(const bf16* x, int64_t count, unsigned* amax_bits, cudaStream_t stream);

// q[r, :] = e4m3(x[r, :] / s) for r < n, zero for n <= r < rows; x [n, cols] BF16, q [rows, cols].
// s from amax_bits (dynamic) or static_scale (amax_bits null). Writes `targets`.
void launch_quantize_fp8(const bf16* x, uint8_t* q, int64_t n, int64_t rows, int64_t cols, const unsigned* amax_bits,
                         float static_scale, const ScaleTargets& targets, cudaStream_t stream);

// z = silu(gate) * up (SPEC.md's GLU with act = SiLU, silu(g) = g / (1 + exp(-g)), in float) for
// rows [0, n); rows [n, rows) of z are zero.
void launch_swiglu_bf16(const bf16* h, bf16* z, int64_t n, int64_t rows, SwigluLayout layout, cudaStream_t stream);
// FP8 MLPs: h holds raw products; column c of h is multiplied by h_scale[c] (w_scale * s_x, for
// all 2(s_p + k_p) columns) before the activation.
// The amax of z over rows [0, n), without writing z (the first pass of dynamic FP8 scaling).
void launch_swiglu_amax(const bf16* h, int64_t n, SwigluLayout layout, const float* h_scale, unsigned* amax_bits, cudaStream_t stream);
// z = e4m3(silu(gate) * up / s), s as for launch_quantize_fp8; writes `targets`.
void launch_swiglu_fp8(const bf16* h, uint8_t* z, int64_t n, int64_t rows, SwigluLayout layout, const float* h_scale,
                       const unsigned* amax_bits, float static_scale, const ScaleTargets& targets, cudaStream_t stream);

// out[r, j] = (sum_{p < parts} y[p * part_stride + r * cols + j]) * scale[j] for out [rows, cols]
// BF16 and `parts` such blocks of y (out may be y): the products of an input-split GEMM's regions
// run side by side, or of the parts of k a GEMM wrote apart (gemm.h), summed, and FP8 raw products
// made values. scale null: 1. part_stride a multiple of 8.
void launch_combine_columns(bf16* out, const bf16* y, int parts, int64_t part_stride, int64_t rows, int64_t cols, const float* scale,
                            cudaStream_t stream);

// *count = the number of groups of 4 consecutive columns (of a row-major [rows, cols] weight)
// holding more than 2 non-zero values (+0 and -0 are zero).
void launch_count_2to4_violations(GemmDType dtype, const void* w, int64_t rows, int64_t cols, unsigned* count, cudaStream_t stream);

// Random weights for benchmarks, a pure function of (seed, row, column): rows [0, valid_rows) x
// columns [0, valid_cols) of a row-major [rows, cols] matrix get +-U(a/16, a) (never zero), with 2
// of every 4 columns zeroed when `two_four`; the padding is zero. FP8 stores e4m3(v * 448 / a),
// so its per-row weight scale is a / 448.
void launch_random_weights(GemmDType dtype, void* w, int64_t rows, int64_t cols, int64_t valid_rows, int64_t valid_cols,
                           bool two_four, float amplitude, uint64_t seed, cudaStream_t stream);
// `count` random activations +-U(a/16, a) (FP8: the e4m3 codes of +-U(28, 448)).
void launch_random_activations(GemmDType dtype, void* x, int64_t count, float amplitude, uint64_t seed, cudaStream_t stream);
void launch_fill_f32(float* p, int64_t count, float value, cudaStream_t stream);

// Reads `bytes` of `buf` (16-byte aligned, bytes a multiple of 16) so that what was in L2 is
// evicted; `sink` receives nothing unless the data sum to an impossible value.
void launch_read_buffer(const void* buf, size_t bytes, float* sink, cudaStream_t stream);

// dst = src (16-byte aligned, bytes a multiple of 16), written delay_ns after the kernel started and
// let its dependents launch: the predecessor with which library_pdl.h probes a GEMM.
void launch_delayed_copy(void* dst, const void* src, size_t bytes, unsigned delay_ns, cudaStream_t stream);

// A kernel node that writes what the graph memset node of `m` writes, after waiting for its
// predecessors (launch.h), so that edges into it may be programmatic; it lets its dependents
// launch at once, so that the edge out of it may be too (library_pdl.h's memsets_to_kernels).
// `args` holds the kernel's argument values, which the returned parameters point to: keep it
// alive until the node is added.
struct MemsetKernelArgs {
    void* dst = nullptr;
    size_t pitch = 0, width = 0, height = 0;
    unsigned value = 0, element_size = 0;
    void* pointers[6] = {};
};
cudaKernelNodeParamsV2 memset_kernel_params(const cudaMemsetParams& m, MemsetKernelArgs& args);

}  // namespace spense::gpu
