// One Spense MLP on the GPU (SPEC.md, "The Spense format") and the operators of the paper.
//
// Storage. With s = d_ff - k sparse and k dense intermediate indices, each region is padded with
// zero rows / columns to s_p and k_p, multiples of kRegionGranule = 32, so that every GEMM meets
// the libraries' shape rules (cuSPARSELt FP8: multiples of 32; cuBLASLt FP8: 16) for any k, e.g.
// k = 36 of d_ff = 200 runs as s_p = 192, k_p = 64. Zero weights add exact zeros, so the padding
// changes no result. Real layouts (k and d_ff multiples of 128) need none.
//   gate_up sparse [2 s_p, d] = [gate rows 0..s, 0 | up rows 0..s, 0]      2:4 (SparseGemm: native and cuSPARSELt forms)
//   gate_up dense  [2 k_p, d] = [gate rows s..d_ff, 0 | up rows s..d_ff, 0]  cuBLASLt
//   down sparse    [d, s_p]   = [down columns 0..s, 0]                       2:4, compressed
//   down dense     [d, k_p]   = [down columns s..d_ff, 0]                    cuBLASLt
// gate and up are fused: one GEMM per region computes both. FP8 (E4M3): per-output-channel weight
// scales scale_j = max_c |W[j, c]| / 448 (1 for a zero row), stored as q = e4m3(W / scale_j): one
// per row of each gate_up region, and one per row of down over both of its regions, so that the
// sparse and the dense GEMM of the input-split sum to one raw result that a single factor scales.
//
// The operators, on activations of which the first n tokens are real and the rest, up to the
// rows of the 2:4 GEMM that reads them (MlpPlan: n, or n rounded up to 16, cuSPARSELt's granule,
// each GEMM its own), are zero:
//   quantize  x [n, d] BF16 -> xq [r_gu, d]: FP8 e4m3(x / s_x) with one per-tensor scale s_x
//             (dynamic: amax(x) / 448 computed on the GPU; static: given); BF16 a padded copy.
//   gate_up   xq -> h [r_gu, 2(s_p + k_p)] = [gate_s | up_s | gate_d | up_d]: output-split, one
//             sparse GEMM writes the first 2 s_p columns, one dense GEMM the last 2 k_p, both with
//             row stride 2(s_p + k_p), so the results land where the activation reads them.
//   activate  h -> z [r_down, s_p + k_p] = [z_s | z_d], z = silu(gate) * up (FP8: e4m3(z / s_z)).
//   down      z -> y [r_down, d]: input-split, y = z[:, :s_p] W_ds^T + z[:, s_p:] W_dd^T, the two
//             GEMMs side by side, each reading its columns of z in place and writing its own
//             products (a GEMM may write parts of k apart, gemm.h); one pass adds them all (and
//             applies FP8's scales).
// The dense GEMMs run on the n real tokens only.
//
// Where the FP8 scales are applied. Every FP8 GEMM writes raw products of E4M3 codes (gemm.h says
// why). The activation scales s_x, s_z are computed (dynamic: amax / 448 on the GPU) or taken
// (static) in the quantize / activate kernels, which also write the per-output-channel factors
// w_scale_j * s of the GEMMs that read their output. gate_up's factors are applied inside the
// activation kernel as it reads h (fused; h keeps raw products, gate_up_column_scale() says by
// what), down's by the pass that adds its two GEMMs' products (or by the decode engine's next norm).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "format/spense.h"
#include "gpu/device_buffer.h"
#include "gpu/gemm.h"
#include "gpu/kernels.h"

namespace spense::gpu {

class GpuContext;
struct MlpBackendChoice;  // plan_cache.h
struct MlpBackendPair;

struct GpuMlpOptions {
    GemmDType dtype = GemmDType::BF16;
    // FP8 activation scales: dynamic (from each call's amax), or the static x_scale / z_scale.
    bool dynamic_scales = true;
    float x_scale = 1.0f, z_scale = 1.0f;
    // The type of the GEMMs' outputs h and y. Float32 serves the BF16 decode engine, whose own
    // kernels read them (decode_kernels.h); activate, down and forward read BF16 outputs only.
    GemmOut gemm_out = GemmOut::BF16;
};

// Where the regions and intermediate indices sit in the padded buffers.
struct SpenseMlpLayout {
    static constexpr int64_t kRegionGranule = 32;

    int64_t hidden = 0, d_ff = 0, dense = 0;  // d, d_ff, k
    int64_t sparse_padded = 0, dense_padded = 0;  // s_p, k_p

    // Validates the shape: 0 <= k <= d_ff, s a multiple of 4, hidden a multiple of 32 (the GEMMs'
    // reduction over d cannot be padded without copying every activation).
    static SpenseMlpLayout make(int64_t hidden, int64_t d_ff, int64_t dense);

    int64_t sparse() const { return d_ff - dense; }
    int64_t width() const { return sparse_padded + dense_padded; }  // columns of z
    SwigluLayout swiglu() const { return {sparse_padded, dense_padded}; }
    // Columns of intermediate index i (0 <= i < d_ff): in z, and its gate and up in h.
    int64_t z_column(int64_t i) const { return i < sparse() ? i : sparse_padded + (i - sparse()); }
    int64_t gate_column(int64_t i) const { return i < sparse() ? i : 2 * sparse_padded + (i - sparse()); }
    int64_t up_column(int64_t i) const {
        return i < sparse() ? sparse_padded + i : 2 * sparse_padded + dense_padded + (i - sparse());
    }
};

// How one 2:4 GEMM of the MLP runs n tokens: `backend` on `rows` token rows, n or n rounded up to
// SparseGemm::kRowGranule (cuSPARSELt's granule; the rows past n are zero).
struct SparseRun {
    int64_t rows = 0;
    SparseBackend backend = SparseBackend::Native;
};

// "gate_up native, down cusparselt": a pair of 2:4 backends in logs and reports.
std::string backend_pair_name(SparseBackend gate_up, SparseBackend down);

// The MLP's two 2:4 GEMMs for n tokens (n rows, unused, where the MLP has no 2:4 region).
struct MlpPlan {
    SparseRun gate_up, down;
    int64_t max_rows() const { return gate_up.rows > down.rows ? gate_up.rows : down.rows; }
};

class GpuSpenseMlp {
public:
    // From host weights in the runtime layout (check_spense_mlp must accept them); FP8 weights are
    // quantized here.
    static GpuSpenseMlp upload(GpuContext& ctx, const SpenseMlpWeights& w, const GpuMlpOptions& opt, cudaStream_t stream);
    // Random weights of any shape for benchmarks (launch_random_weights), generated on the GPU.
    static GpuSpenseMlp random(GpuContext& ctx, int64_t hidden, int64_t d_ff, int64_t dense, const GpuMlpOptions& opt, uint64_t seed,
                               cudaStream_t stream);

    const SpenseMlpLayout& layout() const { return layout_; }
    // How each 2:4 GEMM runs n tokens: our kernel on n rows or cuSPARSELt on n padded to 16, each
    // GEMM its own. Chosen per token bucket by timing the MLP as a decode step runs it (gate_up's
    // two regions side by side, the activation, down_products) with each pair of candidates, in
    // turn from a clean L2 (GpuContext::time_ms), and cached in the context for every MLP of the
    // same shape. Timed apart, a 2:4 GEMM's choice did not hold beside the dense region's GEMM: at
    // batch 1 (FP8, 37.5% sparsity, Qwen3-32B on the H200) gate_up's 2:4 region timed faster alone
    // on cuSPARSELt with 16 padded rows (0.0357 against 0.0390 ms) and the step got slower with it
    // (8.49 -> 9.02 ms; bench/README.md). Searches on first use of n's bucket: call it once outside
    // a stream capture.
    MlpPlan plan_for(int64_t n, cudaStream_t stream);
    // The plans plan_for(n) chooses among: the choice of the MLP alone first, then the others by
    // their time alone (one plan where the MLP has one pair of backends).
    std::vector<MlpPlan> plan_candidates(int64_t n, cudaStream_t stream);
    // Makes plan_candidates(n)[candidate] this MLP's plan for n's bucket, in place of the choice of
    // the MLP alone (other MLPs of its shape keep theirs): a decode engine chooses so by timing
    // whole steps (DecodeEngine::tune_gemms).
    void prefer_plan(int64_t n, size_t candidate, cudaStream_t stream);

    // y = mlp(x) for x, y [n, d] BF16 row-major on the device, any n >= 1. Uses workspace owned by
    // this MLP, grown on demand.
    void forward(const bf16* x, bf16* y, int64_t n, cudaStream_t stream);

    // The operators (see the top of this file), for plan = plan_for(n, stream): quantize pads to
    // plan.gate_up.rows, activate to plan.down.rows.
    void quantize(const bf16* x, void* xq, int64_t n, int64_t rows, cudaStream_t stream);
    // h and y are of GpuMlpOptions::gemm_out.
    void gate_up(const void* xq, void* h, int64_t n, const SparseRun& run, cudaStream_t stream);
    void activate(const bf16* h, void* z, int64_t n, int64_t rows, cudaStream_t stream);
    void down(const void* z, bf16* y, int64_t n, const SparseRun& run, cudaStream_t stream);
    // down without its sum and FP8 scaling pass, its two GEMMs side by side: y holds the raw
    // products as down_parts(n, run) parts, the 2:4 region's (its parts of k) then the dense
    // region's; the decode engine adds them and applies down_weight_scale() times its own per-token
    // activation scales where it reads them.
    void down_products(const void* z, void* y, int64_t n, const SparseRun& run, cudaStream_t stream);
    // The parts down_products(z, y, n, run) writes into y, and how far apart (searching on first use).
    ProductParts down_parts(int64_t n, const SparseRun& run, cudaStream_t stream) const;
    bool has_both_regions() const { return down_sparse_ && down_dense_; }
    // Output elements down_products may write into y for plans of up to `rows` token rows.
    int64_t down_out_elements(int64_t rows) const;

    // A serving engine that runs n tokens per call keeps only the 2:4 format of the backends
    // plan_for(n, stream) chose (SparseGemm::keep_backend), halving their memory.
    void keep_sparse_backends_for(int64_t n, cudaStream_t stream);

    // FP8: the activation scales (s_x, s_z) the last quantize and activate used (synchronizes).
    std::pair<float, float> last_scales(cudaStream_t stream) const;
    // FP8: the factors [2(s_p + k_p)] by which the raw columns of h are multiplied in activate
    // (written by quantize); null for BF16.
    const float* gate_up_column_scale() const;
    // FP8: the per-output-channel weight scales, of the columns of h [2(s_p + k_p)] and of the
    // rows of down [d]; null for BF16.
    const float* gate_up_weight_scale() const { return gate_up_w_scale_.as<float>(); }
    const float* down_weight_scale() const { return down_w_scale_.as<float>(); }
    // Bytes of all weights and scales as stored (what a decode step streams).
    size_t weight_bytes() const;

    // The GEMM of each region, null where the region is empty (benchmarks time them alone).
    const SparseGemm* gate_up_sparse() const { return gate_up_sparse_ ? &*gate_up_sparse_ : nullptr; }
    const SparseGemm* down_sparse() const { return down_sparse_ ? &*down_sparse_ : nullptr; }
    const DenseGemm* gate_up_dense() const { return gate_up_dense_ ? &*gate_up_dense_ : nullptr; }
    const DenseGemm* down_dense() const { return down_dense_ ? &*down_dense_ : nullptr; }

    // Bytes each step reads plus writes, counting each input once and each output once (weights
    // as stored: compressed values and metadata for the 2:4 regions, scales): the traffic floor.
    struct Traffic {
        double quantize = 0, gate_up = 0, activate = 0, down = 0, forward = 0;
    };
    Traffic traffic(int64_t n, const MlpPlan& plan) const;  // plan = plan_for(n, .)

private:
    GpuSpenseMlp(GpuContext& ctx, SpenseMlpLayout layout, GpuMlpOptions opt) : ctx_(&ctx), layout_(layout), opt_(opt) {}
    struct Regions;  // the four weights before the GEMMs take them
    void build(Regions&& r, cudaStream_t stream);
    void reserve(int64_t rows);  // workspace of forward()
    void grow_parts_buffer(const ProductParts& parts);  // y_parts_ to hold down's products in `parts`
    static SparseRun sparse_run(int64_t n, SparseBackend backend);
    static MlpPlan plan_of(int64_t n, const MlpBackendPair& p);
    const MlpBackendChoice& backend_choice(int64_t n, cudaStream_t stream);  // the context's cached choice for n's bucket
    // Times the MLP on n tokens with each pair of backends its 2:4 GEMMs hold (plan_for).
    MlpBackendChoice choose_backends(int64_t n, cudaStream_t stream);

    // The dense region's columns of an intermediate activation z [rows, s_p + k_p].
    const void* dense_part(const void* z) const;
    // Throws unless the GEMMs write BF16 (the operators that read their outputs here need it).
    void require_bf16_outputs(const char* op) const;

    GpuContext* ctx_;
    SpenseMlpLayout layout_;
    GpuMlpOptions opt_;
    std::optional<SparseGemm> gate_up_sparse_, down_sparse_;
    std::optional<DenseGemm> gate_up_dense_, down_dense_;
    DeviceBuffer xq_, h_, z_, y_;  // forward()'s activations (and choose_backends'), for capacity_ rows
    DeviceBuffer y_parts_;         // down's products where they come in several parts, before the pass adds them
    DeviceBuffer scalars_;         // amax bits of x and z, then s_x and s_z
    // FP8: weight scales per output channel, and those times the activation scale (per call).
    DeviceBuffer gate_up_w_scale_, down_w_scale_, gate_up_column_scale_, down_column_scale_;
    int64_t capacity_ = 0;
    std::map<int64_t, size_t> preferred_;  // token bucket -> plan_candidates index (prefer_plan)
};

}  // namespace spense::gpu
