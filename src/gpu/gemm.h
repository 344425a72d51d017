// The GEMM backends behind the Spense operators, with one convention for all:
//
//   Y[r, j] (+)= sum_c X[r, c] * W[j, c]      r < n tokens, j < m outputs, c < k
//
// W [m, k] is row-major (a PyTorch linear weight), X [n, k] row-major with row stride ldb, Y [n, m]
// row-major BF16 (or float32: GemmShape::out) with row stride ldc: an input may be a column block of a wider tensor (the dense
// columns of the intermediate activation) and an output a column block of one (the sparse or dense
// rows of gate_up), so no activation is copied. In the libraries' column-major terms this is
// D[m, n] = op(A) B with both operands K-major ("TN"), the layout FP8 kernels need on sm_90.
//
// BF16, or FP8 (E4M3 W and X); FP32 accumulation, BF16 or float32 Y. FP8 GEMMs produce the raw products of
// the E4M3 codes: the per-output-channel weight scale and the per-tensor activation scale are
// applied by the Spense MLP's fused steps (spense_mlp.h), the same way for both backends, because
// cuSPARSELt has no per-channel epilogue scale for E4M3 on sm_90 (alpha-vector scaling is
// CUSPARSE_STATUS_NOT_SUPPORTED in 0.8.0, 0.8.1 and 0.10.0) and cuBLASLt's per-channel
// (outer-vector) FP8 kernels were slower than its unscaled ones (measured on an H100 for Qwen3-32B:
// down at N = 32 0.090 vs 0.057 ms, gate_up at N = 16384 8.2 vs 7.1 ms).
// accumulate: Y += ... (beta = 1), the input-split form that adds into an existing output. The
// Spense MLP does not use it: its down runs the two regions' GEMMs side by side into two outputs
// (spense_mlp.h), which one pass (GpuSpenseMlp::down) or the decode engine's next norm adds.
// max_k_parts > 1 lets a GEMM write the products of parts of k apart, for such a consumer: part i
// into rows [i r, (i + 1) r) of a [parts r, ldc] output (r: the rows the run writes), where a
// reduction inside the GEMM or after it would cost more than the reader's adds. A dense GEMM takes
// k's two halves, which cuBLASLt runs as one strided batch: its own split-K needs a reduction
// kernel after the GEMM and its unsplit kernels leave SMs idle at decode sizes (Qwen3-32B's down
// at 32 tokens on the H200: FP8 34.2 us in halves against 38.1 split by cuBLASLt, BF16 65.3
// against 68.6; bench/README.md). Our 2:4 kernel writes each split-K range's partial sums as a
// part, where it otherwise adds them in a workspace and has the last CTA write y
// (native_sparse_kernels.h). The searches time both forms; k_parts(n) says which a run writes.
//
// Plans (descriptors, the algorithm and its workspace size) are built once per (shape, n) and kept
// in the GpuContext; the algorithm is searched once per (shape, token bucket) by timing candidates
// on the weight itself: cuBLASLt's top heuristic candidates; cuSPARSELt's algorithm ids, each with
// split-K settings where the output tiles leave SMs idle (cuSPARSELt 0.8.0 to 0.10.0 refuse split-K
// > 1 on sm_90 with CUSPARSE_STATUS_INVALID_VALUE, so those candidates count as refused).
#pragma once

#include <compare>
#include <cstdint>
#include <memory>
#include <string>

#include <cuda_runtime.h>

#include "gpu/device_buffer.h"
#include "gpu/gemm_dtype.h"

namespace spense::gpu {

class GpuContext;

struct GemmShape {
    GemmDType dtype = GemmDType::BF16;
    int64_t m = 0, k = 0;  // weight rows (outputs) and columns (reduction)
    int64_t ldb = 0;       // row stride of X, in elements (>= k)
    int64_t ldc = 0;       // row stride of Y, in elements (>= m)
    bool accumulate = false;
    GemmOut out = GemmOut::BF16;
    int64_t max_k_parts = 1;  // 1 .. kMaxKParts, without accumulate (dense GEMMs: 1 or 2, k a multiple of 32)

    auto operator<=>(const GemmShape&) const = default;
    std::string describe() const;  // "fp8 m=51200 k=5120 ldb=5120 ldc=51200 beta=0" (+ " out=f32", " k_parts<=2")
    // Output elements a run on n token rows may write: max_k_parts blocks of [n, ldc].
    int64_t out_elements(int64_t n) const { return max_k_parts * n * ldc; }
};

// Token counts that share one searched algorithm: n rounded up to a power of two.
int64_t token_bucket(int64_t n);

// What every algorithm search of a backend shares: random activations x [bucket, ldb] of the
// shape's type and a zeroed output y [bucket, ldc] in the context's search scratch to time the
// candidates on, and, when the search ends, one search and its wall time counted in ctx.stats().
class GemmSearch {
public:
    GemmSearch(GpuContext& ctx, const GemmShape& s, int64_t bucket, cudaStream_t stream);
    ~GemmSearch();
    GemmSearch(const GemmSearch&) = delete;
    GemmSearch& operator=(const GemmSearch&) = delete;
    void* x() const { return x_; }
    void* y() const { return y_; }

private:
    GpuContext& ctx_;
    double start_;  // seconds on the steady clock
    void *x_ = nullptr, *y_ = nullptr;
};

// y = x W^T by cuBLASLt. Owns its weight.
class DenseGemm {
public:
    DenseGemm(GpuContext& ctx, GemmShape shape, DeviceBuffer weight);

    // Any n >= 1. y holds shape().out_elements(n); the run writes k_parts(n) blocks of [n, ldc].
    void run(const void* x, void* y, int64_t n, cudaStream_t stream) const;
    // The parts of k whose products run(n) writes apart: 1, or 2 where the shape allows it and the
    // chosen algorithm is one of the halves' (searching on first use).
    int k_parts(int64_t n, cudaStream_t stream) const;

    // Choosing the algorithm in context (the decode engine times whole steps with each candidate
    // of its Spense MLPs' dense regions, which run beside their 2:4 GEMMs): how many candidates the
    // search timed alone for n's token bucket (searching on first use; candidate 0 is the fastest
    // alone, the one runs use until told otherwise), and making candidate i the bucket's algorithm
    // for every later run of this shape, on every DenseGemm of the shape on the context.
    int candidates(int64_t n, cudaStream_t stream) const;
    void prefer(int candidate, int64_t n, cudaStream_t stream) const;

    const GemmShape& shape() const { return shape_; }
    size_t weight_bytes() const { return weight_.bytes(); }

private:
    GpuContext* ctx_;
    GemmShape shape_;
    DeviceBuffer weight_;
};

class NativeSparseGemm;

// y = x W^T with W 2:4 sparse along k, by the faster of two kernels per (shape, token bucket),
// measured once and cached in the context: our own (native_sparse.h; any n) and cuSPARSELt's (n a
// multiple of kRowGranule; m and k multiples of 32 for FP8, 16 for BF16; BF16 outputs). Owns the weight in both
// kernels' formats (cuSPARSELt's only where the library is built in and takes the shape) until
// keep_backend settles on one, halving its memory.
enum class SparseBackend : uint8_t { Native, CuSparseLt };
const char* sparse_backend_name(SparseBackend b);

class SparseGemm {
public:
    // cuSPARSELt's shape rules (PyTorch's table; checked here): m and k multiples of 32 (FP8) or 16
    // (BF16), and the token count n a multiple of kRowGranule.
    static constexpr int64_t kRowGranule = 16;
    static constexpr int64_t padded_rows(int64_t n) { return (n + kRowGranule - 1) / kRowGranule * kRowGranule; }

    // `pruned`: W [m, k] row-major on the device, 2:4 along k (checked on the device: a group with
    // more than 2 non-zero values is an error), converted here; the caller may free it afterwards.
    SparseGemm(GpuContext& ctx, GemmShape shape, const DeviceBuffer& pruned, cudaStream_t stream);
    ~SparseGemm();
    SparseGemm(SparseGemm&&) noexcept;
    SparseGemm& operator=(SparseGemm&&) noexcept;

    // Any n >= 1 (cuSPARSELt is eligible for multiples of kRowGranule only). y holds
    // shape().out_elements(n); a run writes k_parts blocks of [n, ldc].
    void run(const void* x, void* y, int64_t n, cudaStream_t stream) const;
    // The backend run() uses for n (searching both on first use of n's bucket: the faster alone),
    // and one backend forced (the Spense MLP's plan, benchmarks, tests; cuSPARSELt must be
    // available and n a multiple of kRowGranule).
    SparseBackend backend_for(int64_t n, cudaStream_t stream) const;
    void run_backend(SparseBackend b, const void* x, void* y, int64_t n, cudaStream_t stream) const;
    // The parts of k whose products a run of backend b on n rows writes apart: our kernel's searched
    // split-K count where it writes them apart (up to shape().max_k_parts), else 1.
    int k_parts(SparseBackend b, int64_t n, cudaStream_t stream) const;
    bool has_cusparselt() const { return compressed_.bytes() > 0; }
    bool has_native() const { return native_ != nullptr; }
    const NativeSparseGemm* native() const { return native_.get(); }
    // Keeps only the format of backend b and frees the other (a serving engine knows its batch and
    // so its backend); every later run uses b (cuSPARSELt then needs n a multiple of kRowGranule).
    void keep_backend(SparseBackend b, cudaStream_t stream);

    const GemmShape& shape() const { return shape_; }
    // Bytes a run streams: the native layout, or cuSPARSELt's compressed weight when only that is
    // kept (the two are within 1% of each other).
    size_t weight_bytes() const;

private:
    GpuContext* ctx_;
    GemmShape shape_;
    std::unique_ptr<NativeSparseGemm> native_;  // null once only cuSPARSELt's format is kept
    DeviceBuffer compressed_;                   // cuSPARSELt's, or empty
};

}  // namespace spense::gpu
