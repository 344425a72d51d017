// DenseGemm: cuBLASLt, "TN" (gemm.h), FP32 compute.
#include <algorithm>
#include <functional>
#include <map>
#include <vector>

#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/gemm.h"
#include "gpu/library_pdl.h"
#include "gpu/plan_cache.h"

namespace spense::gpu {

namespace {

constexpr size_t kWorkspace = size_t(32) << 20;  // cuBLAS' recommended workspace on Hopper
// Asked of the heuristic per search, and all timed (cuBLASLt 13.1 returns up to 8 for FP8 on an
// H100): its top choice is not the fastest at decode sizes (Qwen3-32B's qkv at 32 tokens: its
// fourth), and a search happens once per (shape, token bucket).
constexpr int kHeuristicResults = 32;

cudaDataType data_type(GemmDType t) { return t == GemmDType::BF16 ? CUDA_R_16BF : CUDA_R_8F_E4M3; }

// k_parts 2: k's halves as a strided batch of two, A and B stepping k / 2 columns along their rows
// and D a block of n rows (gemm.h).
std::unique_ptr<DensePlan> make_descriptors(const GemmShape& s, int64_t n, int k_parts) {
    auto p = std::make_unique<DensePlan>();
    p->k_parts = k_parts;
    const std::string what = cat(s.describe(), " n=", n, " k_parts=", k_parts);
    SPENSE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), what);
    // Column-major view: D[m, n] = op(A)[m, k] B[k, n] with A = W^T stored [k, m] (ld k), op = T.
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    SPENSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), what);
    SPENSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), what);
    const int64_t kp = s.k / k_parts;
    SPENSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, data_type(s.dtype), kp, s.m, s.k), what);
    SPENSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, data_type(s.dtype), kp, n, s.ldb), what);
    SPENSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, s.out == GemmOut::F32 ? CUDA_R_32F : CUDA_R_16BF, s.m, n, s.ldc), what);
    if (k_parts > 1) {
        const int32_t batch = k_parts;
        const int64_t in_stride = kp, out_stride = n * s.ldc;
        for (cublasLtMatrixLayout_t l : {p->a, p->b, p->c})
            SPENSE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch), what);
        for (cublasLtMatrixLayout_t l : {p->a, p->b})
            SPENSE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &in_stride, sizeof in_stride), what);
        SPENSE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(p->c, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &out_stride, sizeof out_stride),
                            what);
    }
    return p;
}

void matmul(GpuContext& ctx, const DensePlan& p, const cublasLtMatmulAlgo_t& algo, size_t workspace, const GemmShape& s,
            int64_t n, const void* w, const void* x, void* y, cudaStream_t stream) {
    const float alpha = 1.0f, beta = s.accumulate ? 1.0f : 0.0f;
    SPENSE_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt(), p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &algo,
                                       ctx.workspace(kWorkspace, stream), workspace, stream),
                        s.describe(), " n=", n);
}

// cuBLASLt's candidates for the plan's form: k whole must have some, k's halves may have none.
std::vector<cublasLtMatmulHeuristicResult_t> heuristic(GpuContext& ctx, const DensePlan& p, const GemmShape& s, int64_t n) {
    cublasLtMatmulPreference_t pref = nullptr;
    SPENSE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    std::vector<cublasLtMatmulHeuristicResult_t> results(kHeuristicResults);
    int count = 0;
    const size_t ws = kWorkspace;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(ctx.cublaslt(), p.desc, p.a, p.b, p.c, p.c, pref, kHeuristicResults, results.data(), &count);
    cublasLtMatmulPreferenceDestroy(pref);
    if (p.k_parts > 1 && (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && count == 0))) return {};
    SPENSE_CUBLAS_CHECK(st, "heuristic for ", s.describe(), " n=", n, " k_parts=", p.k_parts);
    if (count == 0) fail("cuBLASLt has no algorithm for ", s.describe(), " n=", n, " k_parts=", p.k_parts);
    results.resize(size_t(count));
    return results;
}

// Times every heuristic candidate at the bucket's token count on the real weight, with random
// activations in the context's search scratch. (Split-K variants set on the candidates through
// CUBLASLT_ALGO_CONFIG_SPLITK_NUM were accepted by cuBLASLt 13.1 but never won at Qwen3-32B's decode
// shapes on an H100, so they are not searched. Nor is every configuration cuBLASLt has: on the H200,
// the heuristic limited to each algorithm id, every tile x stages pair and then split counts and
// cluster shapes on the fastest eight, 50 to 230 configurations a shape, all of cuBLASLt 13.1's one
// sm_90 algorithm id for these types, timed 0-4% faster alone than the best of this answer (FP8
// gate_up at N = 1: 0.0732 against 0.0764 ms), but the decode step's GEMMs did not follow, dense
// Qwen3-32B against this search on another machine start the same day: batch 32 FP8 9.02 against
// 8.91 ms, batch 1 FP8 8.45 against 8.56, batch 1 BF16 16.80 against 16.05 (bench/README.md).)
DenseChoice search(GpuContext& ctx, const GemmShape& s, int64_t bucket, const void* w, cudaStream_t stream) {
    const GemmSearch search(ctx, s, bucket, stream);
    void *x = search.x(), *y = search.y();
    DenseChoice c;
    for (int parts = 1; parts <= s.max_k_parts; ++parts) {
        auto p = make_descriptors(s, bucket, parts);
        const auto results = heuristic(ctx, *p, s, bucket);
        if (results.empty()) continue;
        std::vector<std::function<void()>> runs;
        for (const auto& r : results) runs.push_back([&] { matmul(ctx, *p, r.algo, r.workspaceSize, s, bucket, w, x, y, stream); });
        const std::vector<double> ms = ctx.time_ms(runs, stream);
        for (size_t i = 0; i < results.size(); ++i) c.timed.push_back({results[i].algo, ms[i], int(i), parts});
    }
    std::stable_sort(c.timed.begin(), c.timed.end(), [](const DenseCandidate& a, const DenseCandidate& b) { return a.ms < b.ms; });
    return c;
}

DenseChoice& choice_for(GpuContext& ctx, const GemmShape& s, int64_t n, const void* w, cudaStream_t stream) {
    const PlanKey bucket{s, token_bucket(n)};
    auto& choices = ctx.caches().dense_choices;
    auto it = choices.find(bucket);
    if (it == choices.end()) it = choices.emplace(bucket, search(ctx, s, bucket.second, w, stream)).first;
    return it->second;
}

const DensePlan& plan_for(GpuContext& ctx, const GemmShape& s, int64_t n, const void* w, cudaStream_t stream) {
    auto& caches = ctx.caches();
    if (auto it = caches.dense_plans.find({s, n}); it != caches.dense_plans.end()) return *it->second;
    const DenseCandidate& chosen = choice_for(ctx, s, n, w, stream).algo();
    auto p = make_descriptors(s, n, chosen.k_parts);
    // The bucket's algorithm serves every n in it where cuBLASLt accepts it; else the heuristic's
    // first for k whole.
    cublasLtMatmulHeuristicResult_t check{};
    if (cublasLtMatmulAlgoCheck(ctx.cublaslt(), p->desc, p->a, p->b, p->c, p->c, &chosen.algo, &check) == CUBLAS_STATUS_SUCCESS &&
        check.workspaceSize <= kWorkspace) {
        p->algo = chosen.algo;
        p->workspace = check.workspaceSize;
    } else {
        p = make_descriptors(s, n, 1);
        const auto first = heuristic(ctx, *p, s, n).front();
        p->algo = first.algo;
        p->workspace = first.workspaceSize;
    }
    p->programmatic = waits_for_programmatic_predecessor(
        ctx, s, n, [&](const void* x, void* y, cudaStream_t st) { matmul(ctx, *p, p->algo, p->workspace, s, n, w, x, y, st); }, stream);
    ctx.stats().plans++;
    return *caches.dense_plans.emplace(PlanKey{s, n}, std::move(p)).first->second;
}

}  // namespace

DenseGemm::DenseGemm(GpuContext& ctx, GemmShape shape, DeviceBuffer weight) : ctx_(&ctx), shape_(shape), weight_(std::move(weight)) {
    const GemmShape& s = shape_;
    SPENSE_CHECK(s.m > 0 && s.k > 0 && s.ldb >= s.k && s.ldc >= s.m, "DenseGemm: bad shape ", s.describe());
    SPENSE_CHECK(weight_.bytes() == size_t(s.m * s.k) * gemm_dtype_bytes(s.dtype), "DenseGemm: weight of ", weight_.bytes(),
                 " bytes for ", s.describe());
    SPENSE_CHECK(s.max_k_parts == 1 || (s.max_k_parts == 2 && !s.accumulate && s.k % 32 == 0),
                 "DenseGemm: k in parts needs 2 parts, no accumulation and k a multiple of 32: ", s.describe());
    if (s.dtype == GemmDType::FP8) {
        // cuBLASLt's FP8 kernels need 16-byte aligned leading dimensions and m, k multiples of 16.
        SPENSE_CHECK(s.m % 16 == 0 && s.k % 16 == 0 && s.ldb % 16 == 0 && s.ldc * gemm_out_bytes(s.out) % 16 == 0,
                     "cuBLASLt FP8 needs m, k and the input row stride multiples of 16 and output rows of a multiple of 16 bytes: ",
                     s.describe());
    }
}

void DenseGemm::run(const void* x, void* y, int64_t n, cudaStream_t stream) const {
    SPENSE_CHECK(n >= 1, "DenseGemm::run: ", n, " tokens");
    const DensePlan& p = plan_for(*ctx_, shape_, n, weight_.get(), stream);
    if (p.programmatic) programmatic_into_next(stream);
    matmul(*ctx_, p, p.algo, p.workspace, shape_, n, weight_.get(), x, y, stream);
}

int DenseGemm::k_parts(int64_t n, cudaStream_t stream) const { return plan_for(*ctx_, shape_, n, weight_.get(), stream).k_parts; }

int DenseGemm::candidates(int64_t n, cudaStream_t stream) const {
    return int(choice_for(*ctx_, shape_, n, weight_.get(), stream).timed.size());
}

void DenseGemm::prefer(int candidate, int64_t n, cudaStream_t stream) const {
    const GemmShape& s = shape_;
    DenseChoice& c = choice_for(*ctx_, s, n, weight_.get(), stream);
    SPENSE_CHECK(candidate >= 0 && size_t(candidate) < c.timed.size(), "DenseGemm::prefer: candidate ", candidate, " of ", c.timed.size(),
                 " for ", s.describe());
    if (c.chosen == size_t(candidate)) return;
    c.chosen = size_t(candidate);
    // The bucket's plans take the new algorithm when next built, n's now (cuBLASLt reads a plan's
    // descriptors when a GEMM is enqueued, so work already queued is unaffected).
    const int64_t bucket = token_bucket(n);
    std::erase_if(ctx_->caches().dense_plans, [&](const auto& kv) { return kv.first.first == s && token_bucket(kv.first.second) == bucket; });
    plan_for(*ctx_, s, n, weight_.get(), stream);
}

}  // namespace spense::gpu
