#include "gpu/decode_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/decode_attention.h"
#include "gpu/decode_kernels.h"
#include "gpu/gemm.h"
#include "gpu/kernels.h"
#include "gpu/library_pdl.h"
#include "gpu/spense_checkpoint.h"
#include "gpu/spense_mlp.h"
#include "gpu/weight_encoding.h"
#include "model/transformer.h"

namespace spense::gpu {

namespace {

// The type every GEMM of the step writes. BF16 engines take float32 outputs: against the CPU
// forward, SmolLM2-135M's largest logit error went from 1.7e-2 to 1.4e-2 of the largest logit
// (dense) and from 2.7e-2 to 1.2e-2 (SpenseGPT+ 25%) on the H200, and the batch-1 Qwen3-32B step
// did not slow (dense 17.36-17.43 -> 17.34-17.42 ms in three runs each;
// bench/results/decode-h200-f32-outputs.md). FP8 engines keep BF16 outputs: there the E4M3 codes
// dominate the error, and BF16 halves the bytes of h.
GemmOut gemm_out_for(GemmDType t) { return t == GemmDType::BF16 ? GemmOut::F32 : GemmOut::BF16; }

// A linear layer: its GEMM, FP8 per-output-channel scales (empty for BF16) and optional bias.
// (Running an attention projection as two concurrent GEMMs over the halves of its reduction, into
// two outputs added where read, was measured slower on an H100 at Qwen3-32B's shapes: 14.88 against
// 14.59 ms per step at batch 32, context 0.)
struct Linear {
    std::optional<DenseGemm> gemm;
    DeviceBuffer scale, bias;

    // The products of n tokens as the next kernel reads them: with k's halves written apart
    // (DenseGemm::k_parts), the second half's rows [n, 2 n) are added to the first's.
    ScaledRows output(const void* raw, const float* row_scale, int64_t n, cudaStream_t stream) const {
        const GemmShape& s = gemm->shape();
        return {raw, s.ldc, row_scale, scale.as<float>(), bias.as<float>(), {gemm->k_parts(n, stream), n * s.ldc}, s.out == GemmOut::F32};
    }
};

// A linear layer's GEMM; k_halves where its reader adds two products (the norm after o_proj).
GemmShape linear_shape(GemmDType t, int64_t rows, int64_t cols, bool k_halves) {
    return {t, rows, cols, cols, rows, false, gemm_out_for(t), k_halves && cols % 32 == 0 ? 2 : 1};
}

struct Layer {
    DeviceBuffer input_norm, post_norm, q_norm, k_norm;  // float32; q/k norms empty unless Qwen3
    Linear qkv, o;
    std::optional<GpuSpenseMlp> mlp;
};

Linear make_linear(GpuContext& ctx, GemmDType t, const std::vector<const Matrix*>& parts, const std::vector<const std::vector<float>*>& biases,
                   bool k_halves, const std::string& what) {
    const int64_t cols = parts[0]->cols;
    int64_t rows = 0;
    for (const Matrix* m : parts) rows += m->rows;
    std::vector<float> w;
    w.reserve(size_t(rows * cols));
    for (const Matrix* m : parts) w.insert(w.end(), m->data.begin(), m->data.end());
    Linear l;
    const std::vector<float> scale = t == GemmDType::FP8 ? fp8_row_scales(w.data(), rows, cols) : std::vector<float>();
    l.gemm.emplace(ctx, linear_shape(t, rows, cols, k_halves), encode_weight(w.data(), rows, cols, t, scale, what));
    if (!scale.empty()) l.scale = upload_floats(scale, what + " FP8 scales");
    if (std::any_of(biases.begin(), biases.end(), [](const auto* b) { return !b->empty(); })) {
        std::vector<float> b;
        for (size_t i = 0; i < parts.size(); ++i) {
            if (biases[i]->empty())
                b.insert(b.end(), size_t(parts[i]->rows), 0.0f);
            else
                b.insert(b.end(), biases[i]->begin(), biases[i]->end());
        }
        l.bias = upload_floats(b, what + " bias");
    }
    return l;
}

// Random weights U(a/16, a) with random signs, a = 1 / sqrt(cols) (kernels.h); FP8 scales a / 448.
Linear random_linear(GpuContext& ctx, GemmDType t, int64_t rows, int64_t cols, bool k_halves, uint64_t seed, cudaStream_t stream,
                     const std::string& what) {
    const float a = float(1.0 / std::sqrt(double(cols)));
    DeviceBuffer w(size_t(rows * cols) * gemm_dtype_bytes(t), what);
    launch_random_weights(t, w.get(), rows, cols, rows, cols, false, a, seed, stream);
    Linear l;
    if (t == GemmDType::FP8) {
        l.scale = DeviceBuffer(size_t(rows) * 4, what + " FP8 scales");
        launch_fill_f32(l.scale.as<float>(), rows, a / kE4M3Max, stream);
    }
    l.gemm.emplace(ctx, linear_shape(t, rows, cols, k_halves), std::move(w));
    return l;
}

DeviceBuffer filled(int64_t count, float value, cudaStream_t stream, const std::string& what) {
    DeviceBuffer b(size_t(count) * 4, what);
    launch_fill_f32(b.as<float>(), count, value, stream);
    return b;
}

}  // namespace

struct DecodeEngine::State {
    GpuContext* ctx = nullptr;
    ModelConfig cfg;
    DecodeOptions opt;
    cudaStream_t stream = nullptr;

    DeviceBuffer embed;  // [vocab, d] BF16
    std::vector<Layer> layers;
    DeviceBuffer final_norm;
    Linear lm_head;
    DeviceBuffer rope;  // [max_ctx, head_dim / 2] float2 (cos, sin)
    std::optional<DecodeAttention> attention;

    int64_t mlp_width = 0;  // widest s_p + k_p over the layers
    DeviceBuffer tokens, lengths, best;
    DeviceBuffer x, act, act_scale, qkv, attn, attn_scale, o, h, z, z_scale, y, logits;
    DeviceBuffer k_cache, v_cache, v_bound, attn_workspace;  // v_bound [layers, batch, kv heads]: FP8 (decode_attention.h)
    std::vector<int32_t> host_lengths;

    int64_t steps = 0;
    std::map<unsigned, cudaGraphExec_t> graphs;  // by the parts of a step they hold (kAllParts: the step)

    ~State() {
        drop_graphs();
        if (stream) cudaStreamDestroy(stream);
    }
    void drop_graphs() {
        for (auto& [parts, exec] : graphs) cudaGraphExecDestroy(exec);
        graphs.clear();
    }

    int64_t qkv_width() const { return (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim; }
    int64_t attn_width() const { return cfg.n_heads * cfg.head_dim; }
    size_t cache_layer_elems() const { return size_t(opt.batch * cfg.n_kv_heads * opt.max_ctx * cfg.head_dim); }

    // Checks the geometry, creates the stream, and everything but the weights.
    void prepare(GpuContext& c, const ModelConfig& config, const DecodeOptions& options) {
        ctx = &c;
        cfg = config;
        opt = options;
        SPENSE_CHECK(opt.batch >= 1, "decode engine: batch must be >= 1, got ", opt.batch);
        SPENSE_CHECK(opt.max_ctx >= 1, "decode engine: max_ctx must be >= 1, got ", opt.max_ctx);
        SPENSE_CHECK(cfg.hidden % 32 == 0 && attn_width() % 16 == 0, "decode engine: ", cfg.architecture, " has hidden size ",
                     cfg.hidden, " and attention width ", attn_width(),
                     "; the GPU GEMMs need multiples of 32 and 16 (FP8 and 2:4 alignment)");
        SPENSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "decode engine stream");
        attention.emplace(DecodeAttentionShape{opt.batch, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, opt.max_ctx, cfg.sliding_window},
                          ctx->props());
        const std::vector<double> inv_freq = cfg.rope_inv_freq();
        const int64_t half = cfg.head_dim / 2;
        std::vector<float> table(size_t(opt.max_ctx * half * 2));
        for (int64_t p = 0; p < opt.max_ctx; ++p)
            for (int64_t i = 0; i < half; ++i) {
                const double angle = double(p) * inv_freq[size_t(i)];
                table[size_t((p * half + i) * 2)] = float(std::cos(angle));
                table[size_t((p * half + i) * 2 + 1)] = float(std::sin(angle));
            }
        rope = upload_floats(table, "RoPE table");
    }

    void allocate_activations() {
        const int64_t B = opt.batch, d = cfg.hidden;
        int64_t rows = B;  // activation rows held: the batch, or the most any MLP plan candidate reads
        for (Layer& l : layers) {
            for (const MlpPlan& p : l.mlp->plan_candidates(B, stream)) rows = std::max(rows, p.max_rows());  // tune_gemms may pick any
            mlp_width = std::max(mlp_width, l.mlp->layout().width());
        }
        const size_t e = gemm_dtype_bytes(opt.dtype), out = gemm_out_bytes(gemm_out_for(opt.dtype));
        tokens = DeviceBuffer(size_t(B) * 4, "decode tokens");
        lengths = DeviceBuffer(size_t(B) * 4, "decode lengths");
        best = DeviceBuffer(size_t(B) * 8, "decode argmax keys");
        x = DeviceBuffer(size_t(B * d) * 4, "residual stream");
        act = DeviceBuffer(size_t(rows * d) * e, "normalized activations");
        act_scale = DeviceBuffer(size_t(rows) * 4, "activation scales");
        qkv = DeviceBuffer(size_t(B * qkv_width()) * out, "qkv");
        attn = DeviceBuffer(size_t(B * attn_width()) * e, "attention output");
        attn_scale = DeviceBuffer(size_t(B) * 4, "attention output scales");
        int64_t o_elems = B * d, y_elems = rows * d;  // with parts of k apart (gemm.h), several blocks of rows
        for (const Layer& l : layers) {
            o_elems = std::max(o_elems, l.o.gemm->shape().out_elements(B));
            y_elems = std::max(y_elems, l.mlp->down_out_elements(rows));
        }
        o = DeviceBuffer(size_t(o_elems) * out, "attention projection");
        h = DeviceBuffer(size_t(rows * 2 * mlp_width) * out, "gate_up output");
        z = DeviceBuffer(size_t(rows * mlp_width) * e, "MLP intermediate");
        z_scale = DeviceBuffer(size_t(rows) * 4, "MLP intermediate scales");
        y = DeviceBuffer(size_t(y_elems) * out, "MLP output");
        logits = DeviceBuffer(size_t(B * cfg.vocab) * out, "logits");
        const size_t cache = cache_layer_elems() * size_t(cfg.n_layers) * 2;
        k_cache = DeviceBuffer(cache, cat("K cache (", cfg.n_layers, " layers x ", B, " sequences x ", opt.max_ctx, " tokens)"));
        v_cache = DeviceBuffer(cache, cat("V cache (", cfg.n_layers, " layers x ", B, " sequences x ", opt.max_ctx, " tokens)"));
        v_bound = DeviceBuffer(size_t(cfg.n_layers * B * cfg.n_kv_heads) * sizeof(float), "V cache bounds");
        SPENSE_CUDA_CHECK(cudaMemsetAsync(v_bound.get(), 0, v_bound.bytes(), stream), "clearing the V cache bounds");
        attn_workspace = DeviceBuffer(attention->workspace_bytes(), "attention workspace");
        SPENSE_CUDA_CHECK(cudaMemsetAsync(attn_workspace.get(), 0, attn_workspace.bytes(), stream), "clearing the attention workspace");
        SPENSE_CUDA_CHECK(cudaMemsetAsync(k_cache.get(), 0, k_cache.bytes(), stream), "clearing the K cache");
        SPENSE_CUDA_CHECK(cudaMemsetAsync(v_cache.get(), 0, v_cache.bytes(), stream), "clearing the V cache");
        SPENSE_CUDA_CHECK(cudaMemsetAsync(tokens.get(), 0, tokens.bytes(), stream));
        SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream), "allocating the decode engine");
    }

    ActOut act_out(void* data, int64_t ld, float* scale) const { return {opt.dtype, data, ld, opt.dtype == GemmDType::FP8 ? scale : nullptr}; }
    const float* fp8_only(const DeviceBuffer& b) const { return opt.dtype == GemmDType::FP8 ? b.as<float>() : nullptr; }
};

DecodeEngine::DecodeEngine(std::unique_ptr<State> s) : s_(std::move(s)) {}
DecodeEngine::~DecodeEngine() = default;

const ModelConfig& DecodeEngine::config() const { return s_->cfg; }
const DecodeOptions& DecodeEngine::options() const { return s_->opt; }
cudaStream_t DecodeEngine::stream() const { return s_->stream; }

std::unique_ptr<DecodeEngine> DecodeEngine::load(GpuContext& ctx, const Checkpoint& ckpt, const DecodeOptions& opt) {
    const Transformer model = load_transformer(ckpt);
    // A pruned checkpoint's MLPs are already decoded in `model`; spense.json gives their dense counts.
    const std::vector<int64_t> dense_counts = std::filesystem::exists(ckpt.path / "spense.json")
                                                  ? spense_dense_counts(ckpt)
                                                  : std::vector<int64_t>(size_t(model.config().n_layers), model.config().intermediate);
    return from_model(ctx, model, dense_counts, opt, ckpt.path.string());
}

std::unique_ptr<DecodeEngine> DecodeEngine::from_model(GpuContext& ctx, const Transformer& model, const std::vector<int64_t>& dense_counts,
                                                       const DecodeOptions& opt, const std::string& source) {
    auto s = std::make_unique<State>();
    const ModelConfig& cfg = model.config();
    SPENSE_CHECK(int64_t(dense_counts.size()) == cfg.n_layers, source, ": ", dense_counts.size(), " dense counts for ", cfg.n_layers, " layers");
    s->prepare(ctx, cfg, opt);
    const ModelWeights& w = model.weights();
    const GpuMlpOptions mlp_opt{opt.dtype, true, 1.0f, 1.0f, gemm_out_for(opt.dtype)};
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const LayerWeights& lw = w.layers[size_t(l)];
        const AttentionWeights& a = lw.attn;
        Layer layer;
        layer.input_norm = upload_floats(lw.input_norm, cat("layer ", l, " input norm"));
        layer.post_norm = upload_floats(lw.post_norm, cat("layer ", l, " post-attention norm"));
        if (cfg.qk_norm) {
            layer.q_norm = upload_floats(a.q_norm, cat("layer ", l, " q norm"));
            layer.k_norm = upload_floats(a.k_norm, cat("layer ", l, " k norm"));
        }
        layer.qkv = make_linear(ctx, opt.dtype, {&a.q, &a.k, &a.v}, {&a.q_bias, &a.k_bias, &a.v_bias}, false, cat("layer ", l, " qkv"));
        layer.o = make_linear(ctx, opt.dtype, {&a.o}, {&a.o_bias}, true, cat("layer ", l, " o_proj"));
        const auto* mlp = dynamic_cast<const DenseMlp*>(lw.mlp.get());
        SPENSE_CHECK(mlp, "layer ", l, ": the MLP is not a dense SwiGLU MLP");
        const SpenseMlpWeights mw{mlp->gate, mlp->up, mlp->down, dense_counts[size_t(l)]};
        if (std::string problem = check_spense_mlp(mw); !problem.empty()) fail(source, ": layer ", l, ": ", problem);
        layer.mlp.emplace(GpuSpenseMlp::upload(ctx, mw, mlp_opt, s->stream));
        s->layers.push_back(std::move(layer));
    }
    s->embed = encode_weight(w.embed.data.data(), cfg.vocab, cfg.hidden, GemmDType::BF16, {}, "embedding");
    s->final_norm = upload_floats(w.final_norm, "final norm");
    const Matrix& head = w.lm_head.rows > 0 ? w.lm_head : w.embed;
    static const std::vector<float> no_bias;
    s->lm_head = make_linear(ctx, opt.dtype, {&head}, {&no_bias}, false, "lm_head");
    s->allocate_activations();
    auto engine = std::unique_ptr<DecodeEngine>(new DecodeEngine(std::move(s)));
    engine->set_lengths(std::vector<int32_t>(size_t(opt.batch), 0));
    return engine;
}

std::unique_ptr<DecodeEngine> DecodeEngine::random(GpuContext& ctx, const ModelConfig& cfg, int64_t dense, const DecodeOptions& opt,
                                                   uint64_t seed) {
    auto s = std::make_unique<State>();
    s->prepare(ctx, cfg, opt);
    cudaStream_t st = s->stream;
    const GpuMlpOptions mlp_opt{opt.dtype, true, 1.0f, 1.0f, gemm_out_for(opt.dtype)};
    const int64_t d = cfg.hidden;
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const uint64_t ls = seed * 1000003 + uint64_t(l) * 16;
        Layer layer;
        layer.input_norm = filled(d, 1.0f, st, "input norm");
        layer.post_norm = filled(d, 1.0f, st, "post-attention norm");
        if (cfg.qk_norm) {
            layer.q_norm = filled(cfg.head_dim, 1.0f, st, "q norm");
            layer.k_norm = filled(cfg.head_dim, 1.0f, st, "k norm");
        }
        layer.qkv = random_linear(ctx, opt.dtype, s->qkv_width(), d, false, ls + 1, st, cat("layer ", l, " qkv"));
        layer.o = random_linear(ctx, opt.dtype, d, s->attn_width(), true, ls + 2, st, cat("layer ", l, " o_proj"));
        layer.mlp.emplace(GpuSpenseMlp::random(ctx, d, cfg.intermediate, dense, mlp_opt, ls + 3, st));
        s->layers.push_back(std::move(layer));
    }
    s->embed = DeviceBuffer(size_t(cfg.vocab * d) * 2, "embedding");
    launch_random_weights(GemmDType::BF16, s->embed.get(), cfg.vocab, d, cfg.vocab, d, false, 1.0f, seed * 7 + 5, st);
    s->final_norm = filled(d, 1.0f, st, "final norm");
    s->lm_head = random_linear(ctx, opt.dtype, cfg.vocab, d, false, seed * 7 + 6, st, "lm_head");
    s->allocate_activations();
    auto engine = std::unique_ptr<DecodeEngine>(new DecodeEngine(std::move(s)));
    engine->set_lengths(std::vector<int32_t>(size_t(opt.batch), 0));
    return engine;
}

void DecodeEngine::set_lengths(std::span<const int32_t> lengths) {
    State& s = *s_;
    SPENSE_CHECK(int64_t(lengths.size()) == s.opt.batch, "set_lengths: ", lengths.size(), " lengths for a batch of ", s.opt.batch);
    for (int32_t len : lengths)
        SPENSE_CHECK(len >= 0 && len < s.opt.max_ctx, "set_lengths: ", len, " cached tokens leave no room in a cache of ", s.opt.max_ctx);
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s.stream), "before setting lengths");
    // Fresh sequences: their caches' bounds start again from zero (kept otherwise: a bound of values
    // no longer in the cache is still a bound).
    if (std::all_of(lengths.begin(), lengths.end(), [](int32_t len) { return len == 0; }))
        SPENSE_CUDA_CHECK(cudaMemset(s.v_bound.get(), 0, s.v_bound.bytes()), "clearing the V cache bounds");
    s.host_lengths.assign(lengths.begin(), lengths.end());
    std::vector<int32_t> next(lengths.begin(), lengths.end());
    for (int32_t& len : next) ++len;  // the device counts the next step's token (enqueue_step)
    s.lengths.upload(next.data(), next.size() * 4);
}

// During a step the device lengths count the token being appended (its position is lengths - 1,
// decode_kernels.h); the sampling kernel at the end advances them for the next step, so a replayed
// graph needs nothing from the host. host_lengths mirrors the cached tokens after each step.
void DecodeEngine::enqueue_step(unsigned parts) {
    State& s = *s_;
    const ModelConfig& c = s.cfg;
    const int64_t B = s.opt.batch, d = c.hidden;
    cudaStream_t st = s.stream;
    int64_t rows = B;  // activation rows the norms write: the batch, padded where a chosen 2:4 GEMM reads more
    for (Layer& l : s.layers) rows = std::max(rows, l.mlp->plan_for(B, st).max_rows());
    const float eps = float(c.rms_eps);
    auto* act_scale = s.act_scale.as<float>();
    const ActOut act = s.act_out(s.act.get(), d, act_scale);
    const bool gemms = parts & kGemms, attention = parts & kAttention, elementwise = parts & kElementwise;

    if (elementwise) launch_embed(s.tokens.as<int32_t>(), s.embed.as<bf16>(), s.x.as<float>(), B, d, st);
    ScaledRows pending;  // the last sublayer's output, added to x by the next norm
    for (size_t l = 0; l < s.layers.size(); ++l) {
        Layer& L = s.layers[l];
        if (elementwise) launch_add_norm_quantize(s.x.as<float>(), pending, L.input_norm.as<float>(), eps, B, rows, d, act, st);
        if (gemms) L.qkv.gemm->run(s.act.get(), s.qkv.get(), B, st);
        bf16* k_cache = s.k_cache.as<bf16>() + l * s.cache_layer_elems();
        bf16* v_cache = s.v_cache.as<bf16>() + l * s.cache_layer_elems();
        DecodeAttention::Output out;
        if (s.opt.dtype == GemmDType::FP8) {
            out.fp8 = s.attn.as<uint8_t>();
            out.row_scale = s.attn_scale.as<float>();
        } else {
            out.values = s.attn.as<bf16>();
        }
        const DecodeAttention::Input in{L.qkv.output(s.qkv.get(), s.fp8_only(s.act_scale), B, st), L.q_norm.as<float>(), L.k_norm.as<float>(),
                                        eps, s.rope.as<float2>()};
        float* v_bound = s.opt.dtype == GemmDType::FP8 ? s.v_bound.as<float>() + l * B * c.n_kv_heads : nullptr;
        if (attention) s.attention->run(in, k_cache, v_cache, v_bound, s.lengths.as<int32_t>(), out, s.attn_workspace.get(), st);
        if (gemms) L.o.gemm->run(s.attn.get(), s.o.get(), B, st);
        if (elementwise)
            launch_add_norm_quantize(s.x.as<float>(), L.o.output(s.o.get(), s.fp8_only(s.attn_scale), B, st), L.post_norm.as<float>(), eps,
                                 B, rows, d, act, st);
        GpuSpenseMlp& mlp = *L.mlp;
        const SpenseMlpLayout& ml = mlp.layout();
        const MlpPlan plan = mlp.plan_for(B, st);
        if (gemms) mlp.gate_up(s.act.get(), s.h.get(), B, plan.gate_up, st);
        const bool f32 = gemm_out_for(s.opt.dtype) == GemmOut::F32;
        const ScaledRows h{s.h.get(), 2 * ml.width(), s.fp8_only(s.act_scale), mlp.gate_up_weight_scale(), nullptr, {}, f32};
        if (elementwise)
            launch_swiglu_quantize(h, ml.swiglu(), B, plan.down.rows, s.act_out(s.z.get(), ml.width(), s.z_scale.as<float>()), st);
        if (gemms) mlp.down_products(s.z.get(), s.y.get(), B, plan.down, st);
        pending = {s.y.get(), d, s.fp8_only(s.z_scale), mlp.down_weight_scale(), nullptr, mlp.down_parts(B, plan.down, st), f32};
    }
    if (elementwise) launch_add_norm_quantize(s.x.as<float>(), pending, s.final_norm.as<float>(), eps, B, B, d, act, st);
    if (gemms) s.lm_head.gemm->run(s.act.get(), s.logits.get(), B, st);
    if (elementwise)
        launch_argmax_advance(s.lm_head.output(s.logits.get(), s.fp8_only(s.act_scale), B, st), B, c.vocab, s.best.as<unsigned long long>(),
                          s.tokens.as<int32_t>(), s.lengths.as<int32_t>(), st);
}

void DecodeEngine::step(std::span<const int32_t> tokens) {
    State& s = *s_;
    SPENSE_CHECK(int64_t(tokens.size()) == s.opt.batch, "step: ", tokens.size(), " tokens for a batch of ", s.opt.batch);
    for (int32_t t : tokens) SPENSE_CHECK(t >= 0 && t < s.cfg.vocab, "step: token id ", t, " is outside the vocabulary of ", s.cfg.vocab);
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s.stream), "before feeding tokens");
    s.tokens.upload(tokens.data(), tokens.size() * 4);
    step();
}

void DecodeEngine::step() {
    State& s = *s_;
    for (int32_t& len : s.host_lengths) {
        SPENSE_CHECK(len + 1 <= s.opt.max_ctx, "decode: a sequence reached the cache capacity of ", s.opt.max_ctx,
                     " tokens (raise max_ctx)");
        ++len;
    }
    if (s.steps++ == 0) {
        // Eager: the GEMMs search their algorithms here. Where the MLPs' 2:4 backends or cuBLASLt's
        // algorithms are tuned on whole steps (tune_gemms), this step runs again from its own tokens
        // and lengths; then each 2:4 weight keeps only the format of the backend chosen for this batch.
        std::vector<int32_t> before = s.host_lengths;
        for (int32_t& len : before) --len;
        DeviceBuffer tokens(s.tokens.bytes(), "the first step's tokens");
        SPENSE_CUDA_CHECK(cudaMemcpyAsync(tokens.get(), s.tokens.get(), tokens.bytes(), cudaMemcpyDeviceToDevice, s.stream));
        enqueue_step(kAllParts);
        const bool tuned = tune_gemms(before);
        if (tuned) {
            SPENSE_CUDA_CHECK(cudaMemcpyAsync(s.tokens.get(), tokens.get(), tokens.bytes(), cudaMemcpyDeviceToDevice, s.stream));
            set_lengths(before);
            for (int32_t& len : s.host_lengths) ++len;
        }
        for (Layer& l : s.layers) l.mlp->keep_sparse_backends_for(s.opt.batch, s.stream);
        if (!tuned) return;
    }
    launch_graph(kAllParts);
}

// The searches time their candidates alone, and in a decode step the one fastest alone can lose.
// A Spense MLP's dense regions run beside its 2:4 GEMMs (spense_mlp.h): Qwen3-32B at batch 1 in
// BF16 with 37.5% sparse MLPs took 14.7-14.9 ms a step on the H200 when cuBLASLt's search had
// picked the gate_up region's heuristic answer 0 or 7 and 13.7-14.3 ms with answer 3, which it
// picks as often (the three within 1.2% alone; bench/README.md). And whether a candidate takes
// programmatic edges in the graph (library_pdl.h) weighs as much as its time alone: at batch 32
// with 2:4 FP8 MLPs, our gate_up kernel and cuSPARSELt's timed within 1-2% in the MLP alone, and
// the step took 8.36 ms with ours against 8.24-8.27 with cuSPARSELt's
// (bench/results/decode-h200-step-choice.md). So whole steps decide, in turn: the MLPs' pair of
// 2:4 backends (GpuSpenseMlp::plan_candidates), then each role of cuBLASLt GEMM (qkv, o, the
// MLPs' dense gate_up and down) among every candidate cuBLASLt proposes, up to kCandidates (8 at
// Qwen3-32B's shapes). Each candidate runs in every layer at once (a layer with fewer takes its
// last), timed by the median of kSteps replays of its step's graph, all from `lengths` (they write
// the cache only where the next step from there writes), in rounds that replay every candidate
// once: timed one candidate after another, the same graph moved by 0.7% between two runs of 7
// steps. The choice alone stays unless another candidate is kMargin faster: at batch 1 (FP8, 2:4
// MLPs) cuSPARSELt's down on 16 padded rows stepped 0.2% faster than ours on one row in the
// tuning, and the step then took 0.4-1.2% longer. At batch 32 with 37.5% sparse MLPs the 4
// fastest alone once all stepped in 9.31-9.33 ms where the 8 found 8.75 ms
// (bench/results/decode-h200-library-pdl.md); the dense step took 10.54-10.57 ms with all four
// roles tuned against 10.57-10.64 with only the Spense MLPs' dense regions tuned, in four
// interleaved pairs (bench/results/decode-h200-tuning.md). cuSPARSELt's configurations so chosen
// did not beat its fastest alone (all of them wait for their predecessor). Returns whether it ran
// steps.
bool DecodeEngine::tune_gemms(const std::vector<int32_t>& lengths) {
    constexpr int kCandidates = 8, kSteps = 9;
    constexpr double kMargin = 0.005;  // by which a candidate must beat the choice alone (candidate 0)
    State& s = *s_;
    const int64_t B = s.opt.batch;
    // A choice made by whole steps: its candidates' count in a layer, candidate i in a layer, and
    // optionally what a layer's current choice is, for the log.
    struct Knob {
        std::string name;
        std::function<int(Layer&)> count;
        std::function<void(Layer&, int)> prefer;
        std::function<std::string(Layer&)> what;
    };
    std::vector<Knob> knobs;
    knobs.push_back({"MLP 2:4 backends", [&](Layer& l) { return int(l.mlp->plan_candidates(B, s.stream).size()); },
                     [&](Layer& l, int i) { l.mlp->prefer_plan(B, size_t(i), s.stream); },
                     [&](Layer& l) {
                         const MlpPlan p = l.mlp->plan_for(B, s.stream);
                         return backend_pair_name(p.gate_up.backend, p.down.backend) + "; ";
                     }});
    using DenseRole = std::pair<const char*, std::function<const DenseGemm*(const Layer&)>>;
    const DenseRole roles[] = {{"qkv", [](const Layer& l) { return &*l.qkv.gemm; }},
                               {"o", [](const Layer& l) { return &*l.o.gemm; }},
                               {"gate_up", [](const Layer& l) { return l.mlp->gate_up_dense(); }},
                               {"down", [](const Layer& l) { return l.mlp->down_dense(); }}};
    for (const auto& [name, gemm_of] : roles)
        knobs.push_back({cat("cuBLASLt ", name),
                         [&, gemm_of = gemm_of](Layer& l) {
                             const DenseGemm* g = gemm_of(l);
                             return g ? std::min(g->candidates(B, s.stream), kCandidates) : 0;
                         },
                         [&, gemm_of = gemm_of](Layer& l, int i) { gemm_of(l)->prefer(i, B, s.stream); },
                         [&, gemm_of = gemm_of](Layer& l) { return gemm_of(l)->k_parts(B, s.stream) == 2 ? std::string("k in halves; ") : std::string(); }});

    const auto t0 = std::chrono::steady_clock::now();
    cudaEvent_t e0, e1;
    SPENSE_CUDA_CHECK(cudaEventCreate(&e0));
    SPENSE_CUDA_CHECK(cudaEventCreate(&e1));
    using Exec = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, decltype(&cudaGraphExecDestroy)>;
    const auto time_step = [&](cudaGraphExec_t exec) {
        set_lengths(lengths);
        SPENSE_CUDA_CHECK(cudaEventRecord(e0, s.stream));
        SPENSE_CUDA_CHECK(cudaGraphLaunch(exec, s.stream), "tuning the decode step");
        SPENSE_CUDA_CHECK(cudaEventRecord(e1, s.stream));
        SPENSE_CUDA_CHECK(cudaEventSynchronize(e1), "tuning the decode step");
        float ms = 0;
        SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        return double(ms);
    };
    std::string chosen;
    for (const Knob& knob : knobs) {
        int count = 0;
        Layer* widest = nullptr;  // a layer with `count` candidates
        for (Layer& l : s.layers)
            if (const int own = knob.count(l); own > count) {
                count = own;
                widest = &l;
            }
        if (count < 2) continue;
        const auto prefer = [&](int candidate) {
            for (Layer& l : s.layers)
                if (const int own = knob.count(l); own > 0) knob.prefer(l, std::min(candidate, own - 1));
            SPENSE_CUDA_CHECK(cudaStreamSynchronize(s.stream), "before dropping the decode graphs");
            s.drop_graphs();
        };
        // A graph per candidate, then kSteps rounds replaying each once in turn, so that drifts
        // of the clocks fall on all of them alike.
        std::vector<Exec> graphs;
        for (int i = 0; i < count; ++i) {
            prefer(i);
            // Eager first: a candidate's first run may allocate (split-K workspaces) or build
            // library plans, which a stream capture cannot.
            set_lengths(lengths);
            enqueue_step(kAllParts);
            launch_graph(kAllParts);  // captures it
            graphs.emplace_back(s.graphs.extract(kAllParts).mapped(), &cudaGraphExecDestroy);
        }
        std::vector<std::vector<double>> t(static_cast<size_t>(count));
        for (int round = 0; round < kSteps; ++round)
            for (int i = 0; i < count; ++i) t[size_t(i)].push_back(time_step(graphs[size_t(i)].get()));
        SPENSE_CUDA_CHECK(cudaStreamSynchronize(s.stream), "tuning the decode step");
        graphs.clear();
        std::vector<double> median;
        for (std::vector<double>& v : t) {
            std::nth_element(v.begin(), v.begin() + kSteps / 2, v.end());
            median.push_back(v[kSteps / 2]);
        }
        int best = int(std::min_element(median.begin(), median.end()) - median.begin());
        if (median[size_t(best)] > (1 - kMargin) * median[0]) best = 0;
        prefer(best);
        std::string ms;
        for (int i = 0; i < count; ++i) {
            char m[16];
            std::snprintf(m, sizeof m, "%s%.3f", i ? " / " : "", median[size_t(i)]);
            ms += m;
        }
        chosen += cat(chosen.empty() ? "" : "; ", knob.name, " #", best + 1, " (", knob.what ? knob.what(*widest) : "", ms, " ms a step)");
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    if (chosen.empty()) return false;
    std::fprintf(stderr, "decode: chosen by whole steps (of up to %d candidates, the choice alone first): %s; %.1f s\n", kCandidates,
                 chosen.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return true;
}

void DecodeEngine::step_parts(unsigned parts) {
    SPENSE_CHECK(s_->steps > 0, "step_parts: run one whole step first (its GEMMs search their algorithms outside a capture)");
    launch_graph(parts);
}

void DecodeEngine::launch_graph(unsigned parts) {
    State& s = *s_;
    auto it = s.graphs.find(parts);
    if (it == s.graphs.end()) {
        cudaGraph_t graph = nullptr;
        SPENSE_CUDA_CHECK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeThreadLocal), "capturing the decode step");
        enqueue_step(parts);
        SPENSE_CUDA_CHECK(cudaStreamEndCapture(s.stream, &graph), "capturing the decode step");
        it = s.graphs.emplace(parts, instantiate_captured(graph, "the decode step graph")).first;
    }
    SPENSE_CUDA_CHECK(cudaGraphLaunch(it->second, s.stream), "decode step");
}

std::vector<int32_t> DecodeEngine::next_tokens() {
    std::vector<int32_t> t(size_t(s_->opt.batch));
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s_->stream), "decode step");
    s_->tokens.download(t.data(), t.size() * 4);
    return t;
}

Matrix DecodeEngine::logits() {
    State& s = *s_;
    Matrix m(s.opt.batch, s.cfg.vocab);
    DeviceBuffer f(m.data.size() * 4, "logits float32");
    launch_logits_f32(s.lm_head.output(s.logits.get(), s.fp8_only(s.act_scale), s.opt.batch, s.stream), s.opt.batch, s.cfg.vocab, f.as<float>(), s.stream);
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(s.stream), "logits");
    f.download(m.data.data(), m.data.size() * 4);
    return m;
}

std::string DecodeEngine::mlp_backends() {
    State& s = *s_;
    SPENSE_CHECK(s.steps > 0, "mlp_backends: run one whole step first (it chooses the backends)");
    std::string out;
    for (Layer& l : s.layers) {
        if (!l.mlp->gate_up_sparse()) continue;
        const MlpPlan p = l.mlp->plan_for(s.opt.batch, s.stream);
        const std::string d = backend_pair_name(p.gate_up.backend, p.down.backend);
        if (out.find(d) == std::string::npos) out += (out.empty() ? "" : " | ") + d;
    }
    return out;
}

std::string DecodeEngine::k_halves() {
    State& s = *s_;
    SPENSE_CHECK(s.steps > 0, "k_halves: run one whole step first (it chooses the algorithms)");
    const auto halves = [&](const DenseGemm* g) { return g && g->k_parts(s.opt.batch, s.stream) == 2; };
    std::string out;
    if (std::any_of(s.layers.begin(), s.layers.end(), [&](const Layer& l) { return halves(&*l.o.gemm); })) out = "o";
    if (std::any_of(s.layers.begin(), s.layers.end(), [&](const Layer& l) { return halves(l.mlp->down_dense()); }))
        out += out.empty() ? "down" : ", down";
    return out;
}

double DecodeEngine::weight_bytes() const {
    const State& s = *s_;
    auto linear = [](const Linear& l) { return double(l.gemm->weight_bytes() + l.scale.bytes() + l.bias.bytes()); };
    double b = linear(s.lm_head) + double(s.final_norm.bytes());
    for (const Layer& l : s.layers)
        b += linear(l.qkv) + linear(l.o) + double(l.mlp->weight_bytes() + l.input_norm.bytes() + l.post_norm.bytes() + l.q_norm.bytes() +
                                                  l.k_norm.bytes());
    return b;
}

double DecodeEngine::kv_bytes(int64_t cached) const {
    const ModelConfig& c = s_->cfg;
    // Reads of the cached K and V plus the new entry each writes and reads, per sequence and layer.
    return double(s_->opt.batch) * double(c.n_layers) * double(c.n_kv_heads * c.head_dim) * 2.0 * 2.0 * double(cached + 1);
}

}  // namespace spense::gpu
