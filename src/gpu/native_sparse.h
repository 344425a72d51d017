// NativeSparseGemm: the 2:4 GEMM backend of our own kernel (native_sparse_kernels.h describes the
// kernel and its weight layout), with gemm.h's convention y (+)= x W^T, any n >= 1, and an optional
// per-output-channel factor applied in the epilogue:
//   y[r, j] = out_scale[j] * (sum_c x[r, c] W[j, c] + (accumulate ? y[r, j] : 0)).
// The kernel and the split-K count are searched per (shape, token bucket) by timing (cached in the
// context). Where the shape allows k in parts (GemmShape::max_k_parts), split counts up to it write
// their partial products apart (the form without the workspace's last pass); larger ones add them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda_runtime.h>

#include "gpu/device_buffer.h"
#include "gpu/gemm.h"
#include "gpu/native_sparse_kernels.h"

namespace spense::gpu {

// A launch configuration: the kernel, how many CTAs split k, and whether they write their partial
// products apart (k in parts) rather than adding them.
struct NativeConfig {
    NativeKernel kernel = NativeKernel::Wgmma;
    int splits = 1;
    bool parts = false;

    int k_parts() const { return parts ? splits : 1; }
};

// The searched tuning of a (shape, token bucket).
struct NativeChoice {
    NativeConfig config;
    double ms = 0;
    int candidates = 0;
};

class NativeSparseGemm {
public:
    // `pruned`: W [m, k] row-major on the device, 2:4 along k (a group with more than 2 non-zeros
    // is an error naming the shape); converted here, the caller may free it afterwards.
    NativeSparseGemm(GpuContext& ctx, GemmShape shape, const DeviceBuffer& pruned, cudaStream_t stream);

    // x must be 16-byte aligned with rows (ldb) of a multiple of 16 bytes (checked). out_scale: null
    // or [m] device floats. y holds shape().out_elements(n); a run writes k_parts(n) blocks of [n,
    // ldc]. Not for concurrent use on several streams (one split-K workspace).
    void run(const void* x, void* y, int64_t n, const float* out_scale, cudaStream_t stream) const;
    // The same with an explicit configuration (searches and tests).
    void run_with(NativeConfig config, const void* x, void* y, int64_t n, const float* out_scale, cudaStream_t stream) const;

    // The configurations worth timing for n tokens, and the searched choice of n's bucket.
    std::vector<NativeConfig> candidates(int64_t n) const;
    const NativeChoice& choice(int64_t n, cudaStream_t stream) const;
    int k_parts(int64_t n, cudaStream_t stream) const { return choice(n, stream).config.k_parts(); }

    const GemmShape& shape() const { return shape_; }
    const NativeSparseLayout& layout() const { return layout_; }
    size_t weight_bytes() const { return weights_.bytes(); }

private:
    GpuContext* ctx_;
    GemmShape shape_;
    NativeSparseLayout layout_;
    DeviceBuffer weights_;
    // Split-K partial sums and ticket counters, zero between launches (the last CTA clears them).
    mutable DeviceBuffer workspace_, counters_;
};

}  // namespace spense::gpu
