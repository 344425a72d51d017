// The caches a GpuContext keeps for its GEMMs (internal to src/gpu): per (shape, token bucket) the
// searched algorithm, per (shape, n) the built plan. A plan holds the library descriptors for one
// exact problem size; building it costs microseconds to milliseconds, so it is done once.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <cublasLt.h>

#include "gpu/gemm.h"
#include "gpu/native_sparse.h"

#ifdef SPENSE_HAS_CUSPARSELT
#include <cusparseLt.h>
#endif

namespace spense::gpu {

using PlanKey = std::pair<GemmShape, int64_t>;  // (shape, n or token bucket)

struct DenseCandidate {
    cublasLtMatmulAlgo_t algo{};
    double ms = 0;  // alone, at the bucket's size
    int rank = 0;   // in cuBLASLt's heuristic order for its form
    int k_parts = 1;  // the form: k whole, or its halves as a strided batch (GemmShape::max_k_parts)
};

struct DenseChoice {
    std::vector<DenseCandidate> timed;  // every heuristic candidate of every form, fastest alone first
    size_t chosen = 0;                  // the one runs use: the fastest alone, or DenseGemm::prefer's
    const DenseCandidate& algo() const { return timed[chosen]; }
};

struct DensePlan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    size_t workspace = 0;
    int k_parts = 1;
    bool programmatic = false;  // its kernels honour a programmatic edge (library_pdl.h: probed when built)
    DensePlan() = default;
    DensePlan(const DensePlan&) = delete;
    DensePlan& operator=(const DensePlan&) = delete;
    ~DensePlan();
};

#ifdef SPENSE_HAS_CUSPARSELT
struct SparseChoice {
    int alg_id = 0, split_k = 1, split_k_mode = 0;  // mode 0: cuSPARSELt's default
    double ms = 0;
    int candidates = 0;  // configurations (algorithm id, split-K, split-K mode) timed
    int refused = 0;     // configurations cuSPARSELt refused at plan or run time
};

struct SparsePlan {
    cusparseLtMatDescriptor_t a{}, b{}, c{};
    cusparseLtMatmulDescriptor_t matmul{};
    cusparseLtMatmulAlgSelection_t selection{};
    cusparseLtMatmulPlan_t plan{};
    size_t workspace = 0;
    bool programmatic = false;  // as DensePlan's
    int built = 0;  // how many of a, b, c, matmul, selection, plan were initialised (destroyed in reverse)
    SparsePlan() = default;
    SparsePlan(const SparsePlan&) = delete;
    SparsePlan& operator=(const SparsePlan&) = delete;
    ~SparsePlan();
};
#endif

// Which 2:4 kernel runs a (shape, token bucket): the faster of ours and cuSPARSELt's, each at its
// searched best.
struct SparseBackendChoice {
    SparseBackend backend = SparseBackend::Native;
    double native_ms = 0, cusparselt_ms = -1;  // -1: not available or not eligible
};

// A Spense MLP's 2:4 backends for a token bucket (GpuSpenseMlp::plan_for), chosen by timing the
// MLP with each candidate pair; keyed by what the MLP's GEMMs and kernels depend on.
struct MlpPlanKey {
    GemmDType dtype = GemmDType::BF16;
    int64_t hidden = 0, sparse_padded = 0, dense_padded = 0;
    bool dynamic_scales = true;
    int64_t bucket = 0;
    auto operator<=>(const MlpPlanKey&) const = default;
};

struct MlpBackendPair {
    SparseBackend gate_up = SparseBackend::Native, down = SparseBackend::Native;
    double ms = -1;  // median of the MLP alone with this pair; -1: the only pair, not timed
};
struct MlpBackendChoice {
    std::vector<MlpBackendPair> pairs;  // the choice first, then the others by time alone
};

struct PlanCaches {
    std::map<PlanKey, DenseChoice> dense_choices;
    std::map<PlanKey, NativeChoice> native_choices;
    std::map<PlanKey, SparseBackendChoice> sparse_backends;
    std::map<MlpPlanKey, MlpBackendChoice> mlp_backends;
    std::map<PlanKey, std::unique_ptr<DensePlan>> dense_plans;
#ifdef SPENSE_HAS_CUSPARSELT
    std::map<PlanKey, SparseChoice> sparse_choices;
    std::map<PlanKey, std::unique_ptr<SparsePlan>> sparse_plans;
#endif
};

}  // namespace spense::gpu
