// SparseGemm: the native kernel (native_sparse.h) and cuSPARSELt, the faster per (shape, token
// bucket). cuSPARSELt runs with the structured (2:4) operand A = W [m, k] row-major, B = X^T as a
// column-major [k, n] view of the row-major activations (ld = ldb), D column-major [m, n] (ld =
// ldc): both operands K-major, the only layout cuSPARSELt's FP8 kernels have on sm_90.
#include <algorithm>
#include <vector>

#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/gemm.h"
#include "gpu/kernels.h"
#include "gpu/library_pdl.h"
#include "gpu/native_sparse.h"
#include "gpu/plan_cache.h"

namespace spense::gpu {

namespace {

#ifdef SPENSE_HAS_CUSPARSELT

constexpr uint32_t kAlignment = 16;  // bytes; cudaMalloc'd buffers and all our column offsets satisfy it

cudaDataType data_type(GemmDType t) { return t == GemmDType::BF16 ? CUDA_R_16BF : CUDA_R_8F_E4M3; }

const cusparseLtHandle_t* handle(GpuContext& ctx) { return static_cast<const cusparseLtHandle_t*>(ctx.cusparselt()); }

// An algorithm of cuSPARSELt's: configuration id and split-K (mode 0: the library's default).
struct Config {
    int alg_id = 0, split_k = 1, split_k_mode = 0;
};

// Descriptors and plan for one (shape, n, configuration). Returns null with the failing status in
// *status when cuSPARSELt refuses the configuration (searches skip those).
std::unique_ptr<SparsePlan> try_make_plan(GpuContext& ctx, const GemmShape& s, int64_t n, const Config& cfg, cusparseStatus_t* status) {
    const cusparseLtHandle_t* h = handle(ctx);
    auto p = std::make_unique<SparsePlan>();
    const cudaDataType t = data_type(s.dtype);
    auto step = [&](cusparseStatus_t st) {
        *status = st;
        if (st == CUSPARSE_STATUS_SUCCESS) ++p->built;
        return st == CUSPARSE_STATUS_SUCCESS;
    };
    if (!step(cusparseLtStructuredDescriptorInit(h, &p->a, s.m, s.k, s.k, kAlignment, t, CUSPARSE_ORDER_ROW,
                                                 CUSPARSELT_SPARSITY_50_PERCENT)) ||
        !step(cusparseLtDenseDescriptorInit(h, &p->b, s.k, n, s.ldb, kAlignment, t, CUSPARSE_ORDER_COL)) ||
        !step(cusparseLtDenseDescriptorInit(h, &p->c, s.m, n, s.ldc, kAlignment, CUDA_R_16BF, CUSPARSE_ORDER_COL)) ||
        !step(cusparseLtMatmulDescriptorInit(h, &p->matmul, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &p->a,
                                             &p->b, &p->c, &p->c, CUSPARSE_COMPUTE_32F)) ||
        !step(cusparseLtMatmulAlgSelectionInit(h, &p->selection, &p->matmul, CUSPARSELT_MATMUL_ALG_DEFAULT)))
        return nullptr;
    *status = cusparseLtMatmulAlgSetAttribute(h, &p->selection, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &cfg.alg_id, sizeof cfg.alg_id);
    if (*status == CUSPARSE_STATUS_SUCCESS)
        *status = cusparseLtMatmulAlgSetAttribute(h, &p->selection, CUSPARSELT_MATMUL_SPLIT_K, &cfg.split_k, sizeof cfg.split_k);
    if (*status == CUSPARSE_STATUS_SUCCESS && cfg.split_k_mode != 0) {
        const auto mode = cusparseLtSplitKMode_t(cfg.split_k_mode);
        *status = cusparseLtMatmulAlgSetAttribute(h, &p->selection, CUSPARSELT_MATMUL_SPLIT_K_MODE, &mode, sizeof mode);
    }
    if (*status != CUSPARSE_STATUS_SUCCESS) return nullptr;
    if (!step(cusparseLtMatmulPlanInit(h, &p->plan, &p->matmul, &p->selection))) return nullptr;
    *status = cusparseLtMatmulGetWorkspace(h, &p->plan, &p->workspace);
    return *status == CUSPARSE_STATUS_SUCCESS ? std::move(p) : nullptr;
}

std::unique_ptr<SparsePlan> make_plan(GpuContext& ctx, const GemmShape& s, int64_t n, const Config& cfg) {
    cusparseStatus_t st = CUSPARSE_STATUS_SUCCESS;
    auto p = try_make_plan(ctx, s, n, cfg, &st);
    SPENSE_CUSPARSELT_CHECK(st, "plan for ", s.describe(), " n=", n, " algorithm ", cfg.alg_id, " split-K ", cfg.split_k, " mode ",
                            cfg.split_k_mode);
    return p;
}

void run_plan(GpuContext& ctx, const SparsePlan& p, const GemmShape& s, int64_t n, const void* compressed, const void* x, void* y,
              cudaStream_t stream) {
    const float one = 1.0f, beta = s.accumulate ? 1.0f : 0.0f;
    cudaStream_t streams[1] = {stream};
    SPENSE_CUSPARSELT_CHECK(cusparseLtMatmul(handle(ctx), &p.plan, &one, compressed, x, &beta, y, y,
                                             ctx.workspace(std::max<size_t>(p.workspace, 1), stream), streams, 1),
                            s.describe(), " n=", n);
}

// Split-K pays only when the output tiles (about 128 x 128 each) leave SMs idle; each split count
// is tried with both of cuSPARSELt's reduction schemes (in the splitting kernel, or a second one).
std::vector<Config> split_k_candidates(const GpuContext& ctx, const GemmShape& s, int64_t n, int alg_id) {
    std::vector<Config> out = {{alg_id, 1, 0}};
    const int64_t tiles = ((s.m + 127) / 128) * ((n + 127) / 128);
    if (tiles < 2 * ctx.props().multiProcessorCount)
        for (int sk : {2, 4, 8})
            if (s.k / sk >= 256)
                for (int mode : {int(CUSPARSELT_SPLIT_K_MODE_ONE_KERNEL), int(CUSPARSELT_SPLIT_K_MODE_TWO_KERNELS)})
                    out.push_back({alg_id, sk, mode});
    return out;
}

// Times every algorithm id (0 .. CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID) with each split-K candidate
// at the bucket's token count, on the real compressed weight and random activations.
SparseChoice search(GpuContext& ctx, const GemmShape& s, int64_t bucket, const void* compressed, cudaStream_t stream) {
    const GemmSearch search(ctx, s, bucket, stream);
    void *x = search.x(), *y = search.y();
    int max_id = 0;
    {
        auto probe = make_plan(ctx, s, bucket, Config{});
        SPENSE_CUSPARSELT_CHECK(cusparseLtMatmulAlgGetAttribute(handle(ctx), &probe->selection, CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID,
                                                                &max_id, sizeof max_id),
                                s.describe());
    }

    SparseChoice best;
    best.ms = -1;
    for (int id = 0; id <= max_id; ++id)
        for (const Config& cfg : split_k_candidates(ctx, s, bucket, id)) {
            cusparseStatus_t st = CUSPARSE_STATUS_SUCCESS;
            auto p = try_make_plan(ctx, s, bucket, cfg, &st);
            double ms = 0;
            try {
                if (!p) throw Error("refused");
                ms = ctx.time_ms([&] { run_plan(ctx, *p, s, bucket, compressed, x, y, stream); }, stream);
            } catch (const Error&) {
                ++best.refused;  // a configuration the library refuses, or describes but cannot run here
                continue;
            }
            ++best.candidates;
            if (best.ms < 0 || ms < best.ms) {
                best.ms = ms;
                best.alg_id = cfg.alg_id;
                best.split_k = cfg.split_k;
                best.split_k_mode = cfg.split_k_mode;
            }
        }
    if (best.ms < 0) fail("cuSPARSELt: no algorithm runs ", s.describe(), " n=", bucket);
    return best;
}

const SparsePlan& plan_for(GpuContext& ctx, const GemmShape& s, int64_t n, const void* compressed, cudaStream_t stream) {
    auto& caches = ctx.caches();
    if (auto it = caches.sparse_plans.find({s, n}); it != caches.sparse_plans.end()) return *it->second;
    const PlanKey bucket{s, token_bucket(n)};
    auto choice = caches.sparse_choices.find(bucket);
    if (choice == caches.sparse_choices.end())
        choice = caches.sparse_choices.emplace(bucket, search(ctx, s, bucket.second, compressed, stream)).first;
    const SparseChoice& c = choice->second;
    auto p = make_plan(ctx, s, n, {c.alg_id, c.split_k, c.split_k_mode});
    p->programmatic = waits_for_programmatic_predecessor(
        ctx, s, n, [&](const void* x, void* y, cudaStream_t st) { run_plan(ctx, *p, s, n, compressed, x, y, st); }, stream);
    ctx.stats().plans++;
    return *caches.sparse_plans.emplace(PlanKey{s, n}, std::move(p)).first->second;
}

// cuSPARSELt's compressed form of the (checked) 2:4 weight.
DeviceBuffer compress(GpuContext& ctx, const GemmShape& s, const DeviceBuffer& pruned, cudaStream_t stream) {
    const cusparseLtHandle_t* h = handle(ctx);
    cusparseLtMatDescriptor_t a;
    SPENSE_CUSPARSELT_CHECK(cusparseLtStructuredDescriptorInit(h, &a, s.m, s.k, s.k, kAlignment, data_type(s.dtype), CUSPARSE_ORDER_ROW,
                                                               CUSPARSELT_SPARSITY_50_PERCENT),
                            "2:4 weight of ", s.describe());
    size_t compressed_bytes = 0, buffer_bytes = 0;
    SPENSE_CUSPARSELT_CHECK(cusparseLtSpMMACompressedSize2(h, &a, &compressed_bytes, &buffer_bytes), s.describe());
    DeviceBuffer compressed(compressed_bytes, cat("compressed 2:4 weight ", s.describe()));
    DeviceBuffer buffer(buffer_bytes, "cuSPARSELt compression buffer");
    SPENSE_CUSPARSELT_CHECK(cusparseLtSpMMACompress2(h, &a, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, pruned.get(), compressed.get(),
                                                     buffer.get(), stream),
                            s.describe());
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream), "compressing ", s.describe());
    cusparseLtMatDescriptorDestroy(&a);
    return compressed;
}

#endif  // SPENSE_HAS_CUSPARSELT

}  // namespace

const char* sparse_backend_name(SparseBackend b) { return b == SparseBackend::Native ? "native" : "cusparselt"; }

SparseGemm::SparseGemm(GpuContext& ctx, GemmShape shape, const DeviceBuffer& pruned, cudaStream_t stream) : ctx_(&ctx), shape_(shape) {
    const GemmShape& s = shape_;
    SPENSE_CHECK(s.ldb >= s.k && s.ldc >= s.m, "SparseGemm: bad strides ", s.describe());
    SPENSE_CHECK(pruned.bytes() == size_t(s.m * s.k) * gemm_dtype_bytes(s.dtype), "SparseGemm: weight of ", pruned.bytes(),
                 " bytes for ", s.describe());

    // Our own check: cusparseLtSpMMAPruneCheck2 of cuSPARSELt 0.8.x leaves its flag unwritten for E4M3.
    DeviceBuffer violations(sizeof(unsigned), "2:4 check counter");
    launch_count_2to4_violations(s.dtype, pruned.get(), s.m, s.k, violations.as<unsigned>(), stream);
    unsigned bad = 0;
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream), "checking the 2:4 pattern of ", s.describe());
    violations.download(&bad, sizeof bad);
    if (bad != 0)
        fail("the weight of ", s.describe(), " is not 2:4 along its columns: ", bad, " groups of 4 hold more than 2 non-zeros");

    native_ = std::make_unique<NativeSparseGemm>(ctx, s, pruned, stream);
#ifdef SPENSE_HAS_CUSPARSELT
    // Float32 outputs are our kernel's alone: the decode engine asks them of BF16 GEMMs only, where
    // cuSPARSELt is slower than ours at every decode size (bench gemm).
    const int64_t granule = s.dtype == GemmDType::FP8 ? 32 : 16;
    if (s.out == GemmOut::BF16 && s.m % granule == 0 && s.k % granule == 0) compressed_ = compress(ctx, s, pruned, stream);
#endif
}

SparseGemm::~SparseGemm() = default;
SparseGemm::SparseGemm(SparseGemm&&) noexcept = default;
SparseGemm& SparseGemm::operator=(SparseGemm&&) noexcept = default;

size_t SparseGemm::weight_bytes() const { return native_ ? native_->weight_bytes() : compressed_.bytes(); }

void SparseGemm::keep_backend(SparseBackend b, cudaStream_t stream) {
    SPENSE_CHECK(b == SparseBackend::Native ? has_native() : has_cusparselt(), "keep_backend: the ", sparse_backend_name(b),
                 " format of ", shape_.describe(), " is not held");
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream), "before freeing a 2:4 weight format of ", shape_.describe());
    if (b == SparseBackend::Native)
        compressed_ = DeviceBuffer();
    else
        native_.reset();
}

// The searches' times decide (GpuContext::time_ms: medians from a clean, cold L2).
SparseBackend SparseGemm::backend_for(int64_t n, cudaStream_t stream) const {
    if (!has_native()) return SparseBackend::CuSparseLt;
    if (!has_cusparselt() || n % kRowGranule != 0) return SparseBackend::Native;
    auto& cache = ctx_->caches().sparse_backends;
    const PlanKey key{shape_, token_bucket(n)};
    if (auto it = cache.find(key); it != cache.end()) return it->second.backend;
    SparseBackendChoice c;
    c.native_ms = native_->choice(n, stream).ms;
#ifdef SPENSE_HAS_CUSPARSELT
    plan_for(*ctx_, shape_, n, compressed_.get(), stream);  // searches the bucket
    c.cusparselt_ms = ctx_->caches().sparse_choices.at(key).ms;
    if (c.cusparselt_ms < c.native_ms) c.backend = SparseBackend::CuSparseLt;
#endif
    return cache.emplace(key, c).first->second.backend;
}

int SparseGemm::k_parts(SparseBackend b, int64_t n, cudaStream_t stream) const {
    return b == SparseBackend::Native && has_native() ? native_->k_parts(n, stream) : 1;
}

void SparseGemm::run_backend(SparseBackend b, const void* x, void* y, int64_t n, cudaStream_t stream) const {
    if (b == SparseBackend::Native) {
        SPENSE_CHECK(has_native(), "the native 2:4 format of ", shape_.describe(), " was freed (keep_backend kept cuSPARSELt's)");
        native_->run(x, y, n, nullptr, stream);
        return;
    }
    SPENSE_CHECK(has_cusparselt(), "cuSPARSELt is not available for ", shape_.describe());
    SPENSE_CHECK(n >= 1 && n % kRowGranule == 0, "cuSPARSELt needs the token count to be a multiple of ", kRowGranule, ", got ", n,
                 " (pad the activations)");
#ifdef SPENSE_HAS_CUSPARSELT
    const SparsePlan& p = plan_for(*ctx_, shape_, n, compressed_.get(), stream);
    if (p.programmatic) programmatic_into_next(stream);
    run_plan(*ctx_, p, shape_, n, compressed_.get(), x, y, stream);
#endif
}

void SparseGemm::run(const void* x, void* y, int64_t n, cudaStream_t stream) const { run_backend(backend_for(n, stream), x, y, n, stream); }

}  // namespace spense::gpu
