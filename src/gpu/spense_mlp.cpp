#include "gpu/spense_mlp.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "core/dtype.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/plan_cache.h"
#include "gpu/weight_encoding.h"

namespace spense::gpu {

// The four weights in their GEMM dtype, and the FP8 per-output-channel scales: gate_up's for the
// columns of h ([2(s_p + k_p)], sparse rows then dense rows), down's for its rows ([d], one per
// row over both regions, so that one factor applies to the sum of the two GEMMs).
struct GpuSpenseMlp::Regions {
    DeviceBuffer gate_up_sparse, gate_up_dense, down_sparse, down_dense;
    DeviceBuffer gate_up_scale, down_scale;
};

SpenseMlpLayout SpenseMlpLayout::make(int64_t hidden, int64_t d_ff, int64_t dense) {
    SPENSE_CHECK(hidden > 0 && d_ff > 0 && dense >= 0 && dense <= d_ff, "Spense MLP: hidden ", hidden, ", d_ff ", d_ff, ", dense ", dense,
                 " is not a shape (0 <= dense <= d_ff)");
    SPENSE_CHECK((d_ff - dense) % 4 == 0, "Spense MLP: the sparse region of ", d_ff - dense,
                 " intermediate indices is not a multiple of 4, so down's columns cannot be 2:4");
    SPENSE_CHECK(hidden % kRegionGranule == 0, "Spense MLP on the GPU: hidden size ", hidden, " is not a multiple of ", kRegionGranule,
                 ", which cuSPARSELt (FP8 2:4 weights: rows and columns multiples of 32) and cuBLASLt FP8 (multiples of 16) need "
                 "for the reduction over the hidden size; it cannot be padded without copying every activation");
    SpenseMlpLayout l;
    l.hidden = hidden;
    l.d_ff = d_ff;
    l.dense = dense;
    l.sparse_padded = round_up(d_ff - dense, kRegionGranule);
    l.dense_padded = round_up(dense, kRegionGranule);
    return l;
}

GpuSpenseMlp GpuSpenseMlp::upload(GpuContext& ctx, const SpenseMlpWeights& w, const GpuMlpOptions& opt, cudaStream_t stream) {
    if (std::string problem = check_spense_mlp(w); !problem.empty()) fail("GPU Spense MLP: ", problem);
    GpuSpenseMlp mlp(ctx, SpenseMlpLayout::make(w.hidden(), w.d_ff(), w.dense), opt);
    const SpenseMlpLayout& l = mlp.layout_;
    const int64_t d = l.hidden, s = l.sparse(), sp = l.sparse_padded, kp = l.dense_padded;
    // gate_up regions: [gate rows | pad | up rows | pad], each half `half` rows.
    auto gate_up = [&](int64_t first, int64_t count, int64_t half) {
        std::vector<float> out(size_t(2 * half * d), 0.0f);
        for (int64_t i = 0; i < count; ++i) {
            std::copy_n(w.gate.row(first + i), d, out.begin() + (i * d));
            std::copy_n(w.up.row(first + i), d, out.begin() + ((half + i) * d));
        }
        return out;
    };
    // down regions: columns [first, first + count) of each row, padded to `width`.
    auto down = [&](int64_t first, int64_t count, int64_t width) {
        std::vector<float> out(size_t(d * width), 0.0f);
        for (int64_t r = 0; r < d; ++r) std::copy_n(w.down.row(r) + first, count, out.begin() + (r * width));
        return out;
    };
    const bool fp8 = opt.dtype == GemmDType::FP8;
    Regions regions;
    std::vector<float> gate_up_scale;
    const std::vector<float> down_scale = fp8 ? fp8_row_scales(w.down.data.data(), d, l.d_ff) : std::vector<float>();
    auto add_gate_up = [&](int64_t first, int64_t count, int64_t half, const std::string& what) {
        const std::vector<float> m = gate_up(first, count, half);
        const std::vector<float> scale = fp8 ? fp8_row_scales(m.data(), 2 * half, d) : std::vector<float>();
        gate_up_scale.insert(gate_up_scale.end(), scale.begin(), scale.end());
        return encode_weight(m.data(), 2 * half, d, opt.dtype, scale, what);
    };
    if (sp > 0) {
        regions.gate_up_sparse = add_gate_up(0, s, sp, "gate_up 2:4 region");
        regions.down_sparse = encode_weight(down(0, s, sp).data(), d, sp, opt.dtype, down_scale, "down 2:4 region");
    }
    if (kp > 0) {
        regions.gate_up_dense = add_gate_up(s, l.dense, kp, "gate_up dense region");
        regions.down_dense = encode_weight(down(s, l.dense, kp).data(), d, kp, opt.dtype, down_scale, "down dense region");
    }
    if (fp8) {
        regions.gate_up_scale = upload_floats(gate_up_scale, "gate_up FP8 scales");
        regions.down_scale = upload_floats(down_scale, "down FP8 scales");
    }
    mlp.build(std::move(regions), stream);
    return mlp;
}

GpuSpenseMlp GpuSpenseMlp::random(GpuContext& ctx, int64_t hidden, int64_t d_ff, int64_t dense, const GpuMlpOptions& opt, uint64_t seed,
                                  cudaStream_t stream) {
    GpuSpenseMlp mlp(ctx, SpenseMlpLayout::make(hidden, d_ff, dense), opt);
    const SpenseMlpLayout& l = mlp.layout_;
    const int64_t d = l.hidden, s = l.sparse(), sp = l.sparse_padded, kp = l.dense_padded;
    const size_t e = gemm_dtype_bytes(opt.dtype);
    // Amplitudes 1/sqrt(fan_in), as random_spense_mlp; FP8 codes are v * 448 / a, so scale = a / 448.
    const float a_in = float(1.0 / std::sqrt(double(d))), a_ff = float(1.0 / std::sqrt(double(d_ff)));
    auto gate_up = [&](int64_t count, int64_t half, bool two_four, uint64_t salt, const std::string& what) {
        DeviceBuffer b(size_t(2 * half * d) * e, what);
        launch_random_weights(opt.dtype, b.get(), half, d, count, d, two_four, a_in, seed * 8 + salt, stream);
        launch_random_weights(opt.dtype, static_cast<uint8_t*>(b.get()) + size_t(half * d) * e, half, d, count, d, two_four, a_in,
                              seed * 8 + salt + 1, stream);
        return b;
    };
    auto down = [&](int64_t count, int64_t width, bool two_four, uint64_t salt, const std::string& what) {
        DeviceBuffer b(size_t(d * width) * e, what);
        launch_random_weights(opt.dtype, b.get(), d, width, d, count, two_four, a_ff, seed * 8 + salt, stream);
        return b;
    };
    Regions regions;
    if (sp > 0) {
        regions.gate_up_sparse = gate_up(s, sp, true, 0, "gate_up 2:4 region");
        regions.down_sparse = down(s, sp, true, 2, "down 2:4 region");
    }
    if (kp > 0) {
        regions.gate_up_dense = gate_up(l.dense, kp, false, 4, "gate_up dense region");
        regions.down_dense = down(l.dense, kp, false, 6, "down dense region");
    }
    if (opt.dtype == GemmDType::FP8) {
        regions.gate_up_scale = DeviceBuffer(size_t(2 * l.width()) * 4, "gate_up FP8 scales");
        launch_fill_f32(regions.gate_up_scale.as<float>(), 2 * l.width(), a_in / kE4M3Max, stream);
        regions.down_scale = DeviceBuffer(size_t(d) * 4, "down FP8 scales");
        launch_fill_f32(regions.down_scale.as<float>(), d, a_ff / kE4M3Max, stream);
    }
    mlp.build(std::move(regions), stream);
    return mlp;
}

void GpuSpenseMlp::build(Regions&& r, cudaStream_t stream) {
    SPENSE_CHECK(opt_.dynamic_scales || (opt_.x_scale > 0 && opt_.z_scale > 0), "GPU Spense MLP: static FP8 activation scales must be > 0, got ",
                 opt_.x_scale, " and ", opt_.z_scale);
    const SpenseMlpLayout& l = layout_;
    const int64_t d = l.hidden, sp = l.sparse_padded, kp = l.dense_padded, f = l.width();
    const GemmDType t = opt_.dtype;
    const GemmOut o = opt_.gemm_out;
    if (sp > 0) {
        gate_up_sparse_.emplace(*ctx_, GemmShape{t, 2 * sp, d, d, 2 * f, false, o}, r.gate_up_sparse, stream);
        // Its split-K ranges may write their products apart (gemm.h), which down() or the decode
        // engine's norm adds, with the dense region's product after them.
        down_sparse_.emplace(*ctx_, GemmShape{t, d, sp, f, d, false, o, kMaxKParts - (kp > 0 ? 1 : 0)}, r.down_sparse, stream);
    }
    if (kp > 0) {
        gate_up_dense_.emplace(*ctx_, GemmShape{t, 2 * kp, d, d, 2 * f, false, o}, std::move(r.gate_up_dense));
        // Alone, the dense region may write k's halves apart; beside a 2:4 region it is itself the last part.
        down_dense_.emplace(*ctx_, GemmShape{t, d, kp, f, d, false, o, sp == 0 ? 2 : 1}, std::move(r.down_dense));
    }
    if (t == GemmDType::FP8) {
        gate_up_w_scale_ = std::move(r.gate_up_scale);
        down_w_scale_ = std::move(r.down_scale);
        gate_up_column_scale_ = DeviceBuffer(size_t(2 * f) * 4, "gate_up FP8 column factors");
        down_column_scale_ = DeviceBuffer(size_t(d) * 4, "down FP8 column factors");
    }
    scalars_ = DeviceBuffer(4 * sizeof(float), "activation scales");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(scalars_.get(), 0, scalars_.bytes(), stream));
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream), "building the Spense MLP");
}

const float* GpuSpenseMlp::gate_up_column_scale() const { return gate_up_column_scale_.as<float>(); }

MlpPlan GpuSpenseMlp::plan_for(int64_t n, cudaStream_t stream) {
    SPENSE_CHECK(n >= 1, "GpuSpenseMlp::plan_for: ", n, " tokens");
    if (!gate_up_sparse_) return {{n, SparseBackend::Native}, {n, SparseBackend::Native}};
    const MlpBackendChoice& c = backend_choice(n, stream);
    const auto preferred = preferred_.find(token_bucket(n));
    return plan_of(n, c.pairs[preferred == preferred_.end() ? 0 : preferred->second]);
}

const MlpBackendChoice& GpuSpenseMlp::backend_choice(int64_t n, cudaStream_t stream) {
    const MlpPlanKey key{opt_.dtype, layout_.hidden, layout_.sparse_padded, layout_.dense_padded, opt_.dynamic_scales, token_bucket(n)};
    auto& cache = ctx_->caches().mlp_backends;
    auto it = cache.find(key);
    if (it == cache.end()) it = cache.emplace(key, choose_backends(key.bucket, stream)).first;
    return it->second;
}

std::vector<MlpPlan> GpuSpenseMlp::plan_candidates(int64_t n, cudaStream_t stream) {
    if (!gate_up_sparse_) return {plan_for(n, stream)};
    std::vector<MlpPlan> plans;
    for (const MlpBackendPair& p : backend_choice(n, stream).pairs) plans.push_back(plan_of(n, p));
    return plans;
}

void GpuSpenseMlp::prefer_plan(int64_t n, size_t candidate, cudaStream_t stream) {
    if (!gate_up_sparse_) return;
    const MlpBackendChoice& c = backend_choice(n, stream);
    SPENSE_CHECK(candidate < c.pairs.size(), "GpuSpenseMlp::prefer_plan: candidate ", candidate, " of ", c.pairs.size());
    const auto holds = [](const SparseGemm& g, SparseBackend b) { return b == SparseBackend::Native ? g.has_native() : g.has_cusparselt(); };
    const MlpBackendPair& p = c.pairs[candidate];
    SPENSE_CHECK(holds(*gate_up_sparse_, p.gate_up) && holds(*down_sparse_, p.down), "GpuSpenseMlp::prefer_plan: gate_up ",
                 sparse_backend_name(p.gate_up), ", down ", sparse_backend_name(p.down),
                 ": a 2:4 format it needs was freed (keep_sparse_backends_for)");
    preferred_[token_bucket(n)] = candidate;
}

std::string backend_pair_name(SparseBackend gate_up, SparseBackend down) {
    return cat("gate_up ", sparse_backend_name(gate_up), ", down ", sparse_backend_name(down));
}

MlpPlan GpuSpenseMlp::plan_of(int64_t n, const MlpBackendPair& p) { return {sparse_run(n, p.gate_up), sparse_run(n, p.down)}; }

SparseRun GpuSpenseMlp::sparse_run(int64_t n, SparseBackend backend) {
    return {backend == SparseBackend::CuSparseLt ? SparseGemm::padded_rows(n) : n, backend};
}

MlpBackendChoice GpuSpenseMlp::choose_backends(int64_t n, cudaStream_t stream) {
    const auto backends = [](const SparseGemm& g) {
        std::vector<SparseBackend> b;
        if (g.has_native()) b.push_back(SparseBackend::Native);
        if (g.has_cusparselt()) b.push_back(SparseBackend::CuSparseLt);
        return b;
    };
    const std::vector<SparseBackend> gu = backends(*gate_up_sparse_), dn = backends(*down_sparse_);
    MlpBackendChoice choice;
    if (gu.size() * dn.size() == 1) {
        choice.pairs.push_back({gu.front(), dn.front()});
        return choice;
    }

    // forward()'s workspace, y_ first holding a random x whose quantization also sets FP8's column factors.
    const int64_t rows = SparseGemm::padded_rows(n), d = layout_.hidden;
    reserve(rows);
    launch_random_activations(GemmDType::BF16, y_.get(), n * d, 1.0f, uint64_t(n), stream);
    quantize(y_.as<bf16>(), xq_.get(), n, rows, stream);

    std::vector<MlpPlan> plans;
    std::vector<std::function<void()>> runs;
    for (SparseBackend g : gu)
        for (SparseBackend dw : dn) {
            const MlpPlan p{sparse_run(n, g), sparse_run(n, dw)};
            plans.push_back(p);
            grow_parts_buffer(down_parts(n, p.down, stream));
            runs.push_back([this, p, n, stream] {
                gate_up(xq_.get(), h_.get(), n, p.gate_up, stream);
                activate(h_.as<bf16>(), z_.get(), n, p.down.rows, stream);
                down_products(z_.get(), y_parts_.get(), n, p.down, stream);
            });
        }
    // A pair that pads rows must beat the best one that does not by more than kPaddingMargin: these
    // medians move by 1-2% between runs, and padding costs the step's other kernels too (the norm
    // and the activation write the padded rows). At batch 1 (FP8, 37.5% sparsity, Qwen3-32B on
    // the H200) cuSPARSELt's gate_up on 16 padded rows timed 2% faster in the MLP (0.0888 against
    // 0.0907 ms) and the decode step took 2% longer with it (8.82 against 8.61 ms).
    constexpr double kPaddingMargin = 0.03;
    const std::vector<double> ms = ctx_->time_ms(runs, stream);
    const auto pads = [&](size_t i) { return plans[i].max_rows() > n; };
    size_t best = 0, best_unpadded = plans.size();
    for (size_t i = 0; i < plans.size(); ++i) {
        if (ms[i] < ms[best]) best = i;
        if (!pads(i) && (best_unpadded == plans.size() || ms[i] < ms[best_unpadded])) best_unpadded = i;
    }
    if (pads(best) && best_unpadded < plans.size() && ms[best] > (1 - kPaddingMargin) * ms[best_unpadded]) best = best_unpadded;
    std::vector<size_t> order(plans.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        if (a == best || b == best) return a == best && b != best;
        return ms[a] < ms[b];
    });
    for (size_t i : order) choice.pairs.push_back({plans[i].gate_up.backend, plans[i].down.backend, ms[i]});
    return choice;
}

void GpuSpenseMlp::reserve(int64_t rows) {
    if (rows <= capacity_) return;
    const size_t e = gemm_dtype_bytes(opt_.dtype), out = gemm_out_bytes(opt_.gemm_out);
    const int64_t d = layout_.hidden, f = layout_.width();
    xq_ = DeviceBuffer(size_t(rows * d) * e, cat("MLP input, ", rows, " tokens"));
    h_ = DeviceBuffer(size_t(rows * 2 * f) * out, cat("gate_up output, ", rows, " tokens"));
    z_ = DeviceBuffer(size_t(rows * f) * e, cat("intermediate activation, ", rows, " tokens"));
    y_ = DeviceBuffer(size_t(rows * d) * out, cat("MLP output, ", rows, " tokens"));
    capacity_ = rows;
}

void GpuSpenseMlp::quantize(const bf16* x, void* xq, int64_t n, int64_t rows, cudaStream_t stream) {
    const int64_t d = layout_.hidden;
    if (opt_.dtype == GemmDType::BF16) {
        SPENSE_CUDA_CHECK(cudaMemcpyAsync(xq, x, size_t(n * d) * 2, cudaMemcpyDeviceToDevice, stream), "MLP input, ", n, " tokens");
        SPENSE_CUDA_CHECK(cudaMemsetAsync(static_cast<bf16*>(xq) + n * d, 0, size_t((rows - n) * d) * 2, stream));
        return;
    }
    unsigned* amax = scalars_.as<unsigned>();
    ScaleTargets t;
    t.scale = scalars_.as<float>() + 2;
    t.column_scale = gate_up_column_scale_.as<float>();
    t.w_scale = gate_up_w_scale_.as<float>();
    t.columns = 2 * layout_.width();
    if (opt_.dynamic_scales) launch_amax_bf16(x, n * d, amax, stream);
    launch_quantize_fp8(x, static_cast<uint8_t*>(xq), n, rows, d, opt_.dynamic_scales ? amax : nullptr, opt_.x_scale, t, stream);
}

// The regions' GEMMs of gate_up write disjoint columns of h, so they run side by side: at decode
// sizes each alone leaves SMs idle and pays its own ramp and tail. (In turn instead, on one stream,
// Qwen3-32B's decode step on the H200 was slower: batch 32 FP8 at context 0 10.16 -> 10.69 ms at
// 25% sparsity, 9.82 -> 10.36 at 37.5%; batch 1 FP8 at 37.5% 8.56 -> 9.32.) The 2:4 region's
// backend is chosen beside the dense one (plan_for); the dense region's cuBLASLt algorithm is
// searched alone, and the decode engine picks among the fastest alone by timing whole steps
// (DecodeEngine::tune_gemms): timed beside the 2:4 GEMM in the MLP alone, the candidates
// could not be told apart (bench/README.md).
void GpuSpenseMlp::gate_up(const void* xq, void* h, int64_t n, const SparseRun& run, cudaStream_t stream) {
    if (!gate_up_sparse_ || !gate_up_dense_) {
        if (gate_up_sparse_) gate_up_sparse_->run_backend(run.backend, xq, h, run.rows, stream);
        if (gate_up_dense_) gate_up_dense_->run(xq, h, n, stream);
        return;
    }
    void* h_dense = static_cast<uint8_t*>(h) + size_t(2 * layout_.sparse_padded) * gemm_out_bytes(opt_.gemm_out);
    gate_up_dense_->run(xq, h_dense, n, ctx_->fork(stream));
    gate_up_sparse_->run_backend(run.backend, xq, h, run.rows, stream);
    ctx_->join(stream);
}

void GpuSpenseMlp::require_bf16_outputs(const char* op) const {
    SPENSE_CHECK(opt_.gemm_out == GemmOut::BF16, "GpuSpenseMlp::", op, ": this MLP's GEMMs write float32 outputs, which only the decode "
                 "engine's kernels read (GpuMlpOptions::gemm_out)");
}

void GpuSpenseMlp::activate(const bf16* h, void* z, int64_t n, int64_t rows, cudaStream_t stream) {
    require_bf16_outputs("activate");
    const SwigluLayout l = layout_.swiglu();
    if (opt_.dtype == GemmDType::BF16) {
        launch_swiglu_bf16(h, static_cast<bf16*>(z), n, rows, l, stream);
        return;
    }
    unsigned* amax = scalars_.as<unsigned>() + 1;
    ScaleTargets t;
    t.scale = scalars_.as<float>() + 3;
    t.column_scale = down_column_scale_.as<float>();
    t.w_scale = down_w_scale_.as<float>();
    t.columns = layout_.hidden;
    const float* h_scale = gate_up_column_scale_.as<float>();
    if (opt_.dynamic_scales) launch_swiglu_amax(h, n, l, h_scale, amax, stream);
    launch_swiglu_fp8(h, static_cast<uint8_t*>(z), n, rows, l, h_scale, opt_.dynamic_scales ? amax : nullptr, opt_.z_scale, t, stream);
}

void GpuSpenseMlp::down(const void* z, bf16* y, int64_t n, const SparseRun& run, cudaStream_t stream) {
    require_bf16_outputs("down");
    reserve(run.rows);
    // Several products land in y_parts_ (whose rows y may not have), and the pass adds them into y.
    const ProductParts parts = down_parts(n, run, stream);
    if (parts.count > 1) grow_parts_buffer(parts);
    bf16* products = parts.count > 1 ? y_parts_.as<bf16>() : y;
    down_products(z, products, n, run, stream);
    const float* scale = opt_.dtype == GemmDType::FP8 ? down_column_scale_.as<float>() : nullptr;
    if (parts.count > 1 || scale) launch_combine_columns(y, products, parts.count, parts.stride, n, layout_.hidden, scale, stream);
}

ProductParts GpuSpenseMlp::down_parts(int64_t n, const SparseRun& run, cudaStream_t stream) const {
    ProductParts p{0, (down_sparse_ ? run.rows : n) * layout_.hidden};
    if (down_sparse_) p.count += down_sparse_->k_parts(run.backend, run.rows, stream);
    if (down_dense_) p.count += down_dense_->k_parts(n, stream);
    return p;
}

void GpuSpenseMlp::grow_parts_buffer(const ProductParts& parts) {
    const size_t bytes = size_t(parts.count * parts.stride) * gemm_out_bytes(opt_.gemm_out);
    if (y_parts_.bytes() < bytes) y_parts_ = DeviceBuffer(bytes, cat("MLP down products, ", parts.count, " parts of ", parts.stride, " elements"));
}

int64_t GpuSpenseMlp::down_out_elements(int64_t rows) const {
    const int64_t parts = (down_sparse_ ? down_sparse_->shape().max_k_parts : 0) + (down_dense_ ? down_dense_->shape().max_k_parts : 0);
    return parts * rows * layout_.hidden;
}

const void* GpuSpenseMlp::dense_part(const void* z) const {
    return static_cast<const uint8_t*>(z) + size_t(layout_.sparse_padded) * gemm_dtype_bytes(opt_.dtype);
}

// The two regions' GEMMs of down write apart and run side by side, as gate_up's do.
void GpuSpenseMlp::down_products(const void* z, void* y, int64_t n, const SparseRun& run, cudaStream_t stream) {
    if (!has_both_regions()) {
        if (down_sparse_) down_sparse_->run_backend(run.backend, z, y, run.rows, stream);
        if (down_dense_) down_dense_->run(z, y, n, stream);
        return;
    }
    const int64_t sparse_parts = down_sparse_->k_parts(run.backend, run.rows, stream);
    void* y_dense = static_cast<uint8_t*>(y) + size_t(sparse_parts * run.rows * layout_.hidden) * gemm_out_bytes(opt_.gemm_out);
    down_dense_->run(dense_part(z), y_dense, n, ctx_->fork(stream));
    down_sparse_->run_backend(run.backend, z, y, run.rows, stream);
    ctx_->join(stream);
}

void GpuSpenseMlp::keep_sparse_backends_for(int64_t n, cudaStream_t stream) {
    const MlpPlan plan = plan_for(n, stream);
    if (gate_up_sparse_) gate_up_sparse_->keep_backend(plan.gate_up.backend, stream);
    if (down_sparse_) down_sparse_->keep_backend(plan.down.backend, stream);
}

size_t GpuSpenseMlp::weight_bytes() const {
    size_t b = gate_up_w_scale_.bytes() + down_w_scale_.bytes();
    if (gate_up_sparse_) b += gate_up_sparse_->weight_bytes() + down_sparse_->weight_bytes();
    if (gate_up_dense_) b += gate_up_dense_->weight_bytes() + down_dense_->weight_bytes();
    return b;
}

void GpuSpenseMlp::forward(const bf16* x, bf16* y, int64_t n, cudaStream_t stream) {
    SPENSE_CHECK(n >= 1, "GpuSpenseMlp::forward: ", n, " tokens");
    require_bf16_outputs("forward");
    const MlpPlan plan = plan_for(n, stream);
    reserve(plan.max_rows());
    const void* in = x;
    if (opt_.dtype == GemmDType::FP8 || plan.gate_up.rows != n) {
        quantize(x, xq_.get(), n, plan.gate_up.rows, stream);
        in = xq_.get();
    }
    gate_up(in, h_.get(), n, plan.gate_up, stream);
    activate(h_.as<bf16>(), z_.get(), n, plan.down.rows, stream);
    bf16* out = plan.down.rows == n ? y : y_.as<bf16>();
    down(z_.get(), out, n, plan.down, stream);
    if (out != y)
        SPENSE_CUDA_CHECK(cudaMemcpyAsync(y, out, size_t(n * layout_.hidden) * 2, cudaMemcpyDeviceToDevice, stream), "MLP output, ", n,
                          " tokens");
}

std::pair<float, float> GpuSpenseMlp::last_scales(cudaStream_t stream) const {
    float v[4] = {};
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream));
    scalars_.download(v, sizeof v);
    return {v[2], v[3]};
}

GpuSpenseMlp::Traffic GpuSpenseMlp::traffic(int64_t n, const MlpPlan& plan) const {
    const int64_t rows_gu = plan.gate_up.rows, rows_dn = plan.down.rows;
    const int64_t d = layout_.hidden, sp = layout_.sparse_padded, kp = layout_.dense_padded, f = layout_.width();
    const double e = double(gemm_dtype_bytes(opt_.dtype));
    const bool fp8 = opt_.dtype == GemmDType::FP8;
    const double passes = fp8 && opt_.dynamic_scales ? 2 : 1;  // dynamic scaling reads its input once more for the amax
    Traffic t;
    if (fp8)
        t.quantize = passes * double(n * d) * 2 + double(rows_gu * d) * e;
    else if (rows_gu != n)
        t.quantize = double(n * d) * 2 + double(rows_gu * d) * 2;
    if (gate_up_sparse_) t.gate_up += double(gate_up_sparse_->weight_bytes()) + double(rows_gu * d) * e + double(rows_gu * 2 * sp) * 2;
    if (gate_up_dense_) t.gate_up += double(gate_up_dense_->weight_bytes()) + double(n * d) * e + double(n * 2 * kp) * 2;
    t.activate = passes * double(n * 2 * f) * 2 + double(rows_dn * f) * e;
    if (down_sparse_) t.down += double(down_sparse_->weight_bytes()) + double(rows_dn * sp) * e + double(rows_dn * d) * 2;
    if (down_dense_) t.down += double(down_dense_->weight_bytes()) + double(n * kp) * e + double(n * d) * 2;
    if (has_both_regions() || fp8) t.down += double(n * d) * 2 * (has_both_regions() ? 3 : 2);  // the pass adding the regions, scaling
    t.forward = t.quantize + t.gate_up + t.activate + t.down + (rows_dn != n ? double(n * d) * 2 * 2 : 0.0);
    return t;
}

}  // namespace spense::gpu
