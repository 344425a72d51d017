#include "gpu/native_sparse.h"

#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/plan_cache.h"

namespace spense::gpu {

NativeSparseGemm::NativeSparseGemm(GpuContext& ctx, GemmShape shape, const DeviceBuffer& pruned, cudaStream_t stream)
    : ctx_(&ctx), shape_(shape), layout_(NativeSparseLayout::make(shape.dtype, shape.m, shape.k)) {
    const GemmShape& s = shape_;
    SPENSE_CHECK(s.ldb >= s.k && s.ldc >= s.m, "native 2:4 GEMM: bad strides ", s.describe());
    SPENSE_CHECK(s.max_k_parts >= 1 && s.max_k_parts <= kMaxKParts && (s.max_k_parts == 1 || !s.accumulate),
                 "native 2:4 GEMM: k in parts needs 1 to ", kMaxKParts, " parts and no accumulation: ", s.describe());
    SPENSE_CHECK(pruned.bytes() == size_t(s.m * s.k) * gemm_dtype_bytes(s.dtype), "native 2:4 GEMM: weight of ", pruned.bytes(),
                 " bytes for ", s.describe());
    weights_ = DeviceBuffer(layout_.bytes(), cat("native 2:4 weight ", s.describe()));
    DeviceBuffer bad(sizeof(unsigned), "native 2:4 conversion counter");
    launch_native_2to4_convert(layout_, pruned.get(), weights_.get(), bad.as<unsigned>(), stream);
    unsigned count = 0;
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream), "native 2:4 conversion of ", s.describe());
    bad.download(&count, sizeof count);
    if (count != 0)
        fail("the weight of ", s.describe(), " is not 2:4 along its columns: ", count,
             " lanes of the native conversion met a group of 4 with more than 2 non-zeros");
}

std::vector<NativeConfig> NativeSparseGemm::candidates(int64_t n) const {
    // Split k only while the CTAs (one per SM: the kernel holds up to 255 registers a thread) fit in a
    // few waves. A partial last wave costs less than splitting finer: stream-K (equal ranges of row
    // groups x k units for whole waves of 132 to 528 CTAs) was measured on the H200 and never chosen
    // over these (gate_up BF16 N = 1: 200 CTAs, 1.5 waves, 80.4 us) and left the decode step unchanged.
    // Nor were the split counts that fill whole waves (down's 20 row groups: 13, 19, 26) when added.
    // Nor a persistent wgmma kernel (one CTA per SM, equal ranges of (row group, k unit) items, the
    // register ring running on across them, x of the range staged once): on the H200, FP8 gate_up at
    // N = 1 / 16 / 32 took 0.0502 / 0.0570 / 0.0698 ms against 0.0483 / 0.0571 / 0.0648 here; its
    // SMs were busy 93% of the time against 77%, for the same 73% of DRAM peak (Nsight Compute).
    const int64_t sms = ctx_->props().multiProcessorCount;
    std::vector<NativeConfig> out;
    for (NativeKernel kernel : {NativeKernel::Wgmma, NativeKernel::WgmmaCluster, NativeKernel::MmaSync, NativeKernel::MmaSyncPairs}) {
        if (!native_kernel_serves(kernel, shape_.dtype, n)) continue;
        const int64_t ctas = native_row_ctas(layout_, kernel) * NativeSparseLayout::slices(n);
        for (int sk : {1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32})
            if (sk <= layout_.k_units() && (sk == 1 || ctas * sk <= 8 * sms)) out.push_back({kernel, sk, sk > 1 && sk <= shape_.max_k_parts});
    }
    return out;
}

void NativeSparseGemm::run_with(NativeConfig config, const void* x, void* y, int64_t n, const float* out_scale, cudaStream_t stream) const {
    const int splits = config.splits;
    NativeGemmArgs a;
    a.kernel = config.kernel;
    a.layout = layout_;
    a.w = weights_.get();
    a.x = x;
    a.y = y;
    a.out = shape_.out;
    a.out_scale = out_scale;
    a.ldb = shape_.ldb;
    a.ldc = shape_.ldc;
    a.n = n;
    a.splits = splits;
    a.k_parts = config.parts;
    a.accumulate = shape_.accumulate;
    SPENSE_CHECK(config.k_parts() <= shape_.max_k_parts, "native 2:4 GEMM: ", splits, " parts of k for ", shape_.describe());
    if (splits > 1 && !config.parts && n >= 1) {
        const size_t floats = layout_.workspace_floats(n), counters = layout_.counters(n);
        if (workspace_.bytes() < floats * 4 || counters_.bytes() < counters * 4) {
            // Grown between launches: the old buffers may still be in use by queued work.
            SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream), "growing the native 2:4 workspace of ", shape_.describe());
            workspace_ = DeviceBuffer(std::max(floats * 4, workspace_.bytes()), cat("native 2:4 split-K workspace ", shape_.describe()));
            counters_ = DeviceBuffer(std::max(counters * 4, counters_.bytes()), cat("native 2:4 split-K counters ", shape_.describe()));
            SPENSE_CUDA_CHECK(cudaMemsetAsync(workspace_.get(), 0, workspace_.bytes(), stream));
            SPENSE_CUDA_CHECK(cudaMemsetAsync(counters_.get(), 0, counters_.bytes(), stream));
        }
        a.workspace = workspace_.as<float>();
        a.counters = counters_.as<unsigned>();
    }
    launch_native_2to4_gemm(a, stream);
}

const NativeChoice& NativeSparseGemm::choice(int64_t n, cudaStream_t stream) const {
    auto& cache = ctx_->caches().native_choices;
    const PlanKey key{shape_, token_bucket(n)};
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    const int64_t bucket = key.second;
    NativeChoice best;
    best.ms = -1;
    {
        const GemmSearch search(*ctx_, shape_, bucket, stream);
        for (const NativeConfig& config : candidates(bucket)) {
            const double ms = ctx_->time_ms([&] { run_with(config, search.x(), search.y(), bucket, nullptr, stream); }, stream);
            ++best.candidates;
            if (best.ms < 0 || ms < best.ms) {
                best.ms = ms;
                best.config = config;
            }
        }
    }
    return cache.emplace(key, best).first->second;
}

void NativeSparseGemm::run(const void* x, void* y, int64_t n, const float* out_scale, cudaStream_t stream) const {
    run_with(choice(n, stream).config, x, y, n, out_scale, stream);
}

}  // namespace spense::gpu
