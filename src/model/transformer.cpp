#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace spense {

namespace {

float silu(float v) { return v / (1.0f + std::exp(-v)); }

void add_bias(Matrix& y, const std::vector<float>& b) {
    if (b.empty()) return;
#pragma omp parallel for
    for (int64_t r = 0; r < y.rows; ++r) {
        float* row = y.row(r);
        for (int64_t c = 0; c < y.cols; ++c) row[c] += b[size_t(c)];
    }
}

// RMSNorm of each head_dim slice of each row (Qwen3's q_norm / k_norm).
void head_rms_norm(Matrix& x, int64_t head_dim, const std::vector<float>& w, double eps) {
#pragma omp parallel for
    for (int64_t r = 0; r < x.rows; ++r) {
        for (int64_t h = 0; h < x.cols / head_dim; ++h) {
            float* v = x.row(r) + h * head_dim;
            double ss = 0;
            for (int64_t i = 0; i < head_dim; ++i) ss += double(v[i]) * v[i];
            float inv = float(1.0 / std::sqrt(ss / double(head_dim) + eps));
            for (int64_t i = 0; i < head_dim; ++i) v[i] = v[i] * inv * w[size_t(i)];
        }
    }
}

// Half-split RoPE: within each head, pair i is (i, i + hd/2), rotated by position * inv_freq[i].
void apply_rope(Matrix& x, int64_t head_dim, const std::vector<double>& inv_freq) {
    const int64_t half = head_dim / 2;
#pragma omp parallel for
    for (int64_t pos = 0; pos < x.rows; ++pos) {
        for (int64_t i = 0; i < half; ++i) {
            double angle = double(pos) * inv_freq[size_t(i)];
            float c = float(std::cos(angle)), s = float(std::sin(angle));
            for (int64_t h = 0; h < x.cols / head_dim; ++h) {
                float* v = x.row(pos) + h * head_dim;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

std::vector<float> load_vec(const Checkpoint& ck, const std::string& name, int64_t n) { return ck.load_f32(name, {n}); }

Matrix load_mat(const Checkpoint& ck, const std::string& name, int64_t rows, int64_t cols) {
    return Matrix(rows, cols, ck.load_f32(name, {rows, cols}));
}

}  // namespace

void rms_norm(const Matrix& x, const std::vector<float>& weight, double eps, Matrix& y) {
    if (y.rows != x.rows || y.cols != x.cols) y = Matrix(x.rows, x.cols);
#pragma omp parallel for
    for (int64_t r = 0; r < x.rows; ++r) {
        const float* in = x.row(r);
        float* out = y.row(r);
        double ss = 0;
        for (int64_t c = 0; c < x.cols; ++c) ss += double(in[c]) * in[c];
        float inv = float(1.0 / std::sqrt(ss / double(x.cols) + eps));
        for (int64_t c = 0; c < x.cols; ++c) out[c] = in[c] * inv * weight[size_t(c)];
    }
}

DenseMlp::DenseMlp(Matrix g, Matrix u, Matrix d) : gate(std::move(g)), up(std::move(u)), down(std::move(d)) {
    SPENSE_CHECK(gate.rows == up.rows && gate.cols == up.cols && down.rows == gate.cols && down.cols == gate.rows,
                 "DenseMlp: inconsistent shapes gate [", gate.rows, ", ", gate.cols, "], up [", up.rows, ", ", up.cols,
                 "], down [", down.rows, ", ", down.cols, "]");
}

Matrix DenseMlp::intermediate(const Matrix& x) const {
    Matrix g, u;
    linear(x, gate, g);
    linear(x, up, u);
#pragma omp parallel for
    for (int64_t i = 0; i < int64_t(g.data.size()); ++i) g.data[size_t(i)] = silu(g.data[size_t(i)]) * u.data[size_t(i)];
    return g;
}

void DenseMlp::forward(const Matrix& x, Matrix& y) const { linear(intermediate(x), down, y); }

std::unique_ptr<DenseMlp> load_dense_mlp(const Checkpoint& ck, const ModelConfig& c, int64_t l) {
    return std::make_unique<DenseMlp>(load_mat(ck, layer_tensor(l, "mlp.gate_proj.weight"), c.intermediate, c.hidden),
                                      load_mat(ck, layer_tensor(l, "mlp.up_proj.weight"), c.intermediate, c.hidden),
                                      load_mat(ck, layer_tensor(l, "mlp.down_proj.weight"), c.hidden, c.intermediate));
}

ModelWeights load_weights(const Checkpoint& ck, const ModelConfig& c, MlpWeights mlps) {
    ModelWeights w;
    const int64_t d = c.hidden, q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    w.embed = load_mat(ck, "model.embed_tokens.weight", c.vocab, d);
    if (!c.tie_embeddings) w.lm_head = load_mat(ck, "lm_head.weight", c.vocab, d);
    w.final_norm = load_vec(ck, "model.norm.weight", d);
    for (int64_t l = 0; l < c.n_layers; ++l) {
        LayerWeights lw;
        auto name = [l](const char* s) { return layer_tensor(l, s); };
        lw.input_norm = load_vec(ck, name("input_layernorm.weight"), d);
        lw.post_norm = load_vec(ck, name("post_attention_layernorm.weight"), d);
        AttentionWeights& a = lw.attn;
        a.q = load_mat(ck, name("self_attn.q_proj.weight"), q_dim, d);
        a.k = load_mat(ck, name("self_attn.k_proj.weight"), kv_dim, d);
        a.v = load_mat(ck, name("self_attn.v_proj.weight"), kv_dim, d);
        a.o = load_mat(ck, name("self_attn.o_proj.weight"), d, q_dim);
        if (c.qkv_bias) {
            a.q_bias = load_vec(ck, name("self_attn.q_proj.bias"), q_dim);
            a.k_bias = load_vec(ck, name("self_attn.k_proj.bias"), kv_dim);
            a.v_bias = load_vec(ck, name("self_attn.v_proj.bias"), kv_dim);
        }
        if (c.o_bias) a.o_bias = load_vec(ck, name("self_attn.o_proj.bias"), d);
        if (c.qk_norm) {
            a.q_norm = load_vec(ck, name("self_attn.q_norm.weight"), c.head_dim);
            a.k_norm = load_vec(ck, name("self_attn.k_norm.weight"), c.head_dim);
        }
        if (mlps == MlpWeights::Load) {
            lw.mlp = load_dense_mlp(ck, c, l);
        } else {
            ck.tensor(name("mlp.gate_proj.weight"), {c.intermediate, d});
            ck.tensor(name("mlp.up_proj.weight"), {c.intermediate, d});
            ck.tensor(name("mlp.down_proj.weight"), {d, c.intermediate});
        }
        w.layers.push_back(std::move(lw));
    }
    return w;
}

Transformer load_transformer(const Checkpoint& ckpt, MlpWeights mlps) {
    ModelConfig cfg = ModelConfig::from_hf(ckpt.config, ckpt.path.string());
    ModelWeights w = load_weights(ckpt, cfg, mlps);
    return Transformer(std::move(cfg), std::move(w));
}

Transformer::Transformer(ModelConfig cfg, ModelWeights w) : cfg_(std::move(cfg)), w_(std::move(w)), inv_freq_(cfg_.rope_inv_freq()) {}

Matrix Transformer::embed(std::span<const int32_t> tokens) const {
    Matrix x(int64_t(tokens.size()), cfg_.hidden);
    for (size_t t = 0; t < tokens.size(); ++t) {
        SPENSE_CHECK(tokens[t] >= 0 && tokens[t] < cfg_.vocab, "token id ", tokens[t], " at position ", t,
                     " is outside the vocabulary of ", cfg_.vocab);
        std::copy_n(w_.embed.row(tokens[t]), cfg_.hidden, x.row(int64_t(t)));
    }
    return x;
}

void Transformer::attention_block(int64_t l, Matrix& x) const {
    const LayerWeights& lw = w_.layers[size_t(l)];
    const AttentionWeights& a = lw.attn;
    const int64_t T = x.rows, hd = cfg_.head_dim, H = cfg_.n_heads, KV = cfg_.n_kv_heads, group = H / KV;

    Matrix h, q, k, v;
    rms_norm(x, lw.input_norm, cfg_.rms_eps, h);
    linear(h, a.q, q);
    linear(h, a.k, k);
    linear(h, a.v, v);
    add_bias(q, a.q_bias);
    add_bias(k, a.k_bias);
    add_bias(v, a.v_bias);
    if (cfg_.qk_norm) {
        head_rms_norm(q, hd, a.q_norm, cfg_.rms_eps);
        head_rms_norm(k, hd, a.k_norm, cfg_.rms_eps);
    }
    apply_rope(q, hd, inv_freq_);
    apply_rope(k, hd, inv_freq_);

    // Causal (optionally sliding-window) attention per head, in row blocks so that block
    // [r0, r1) only multiplies against keys [0, r1).
    Matrix out(T, H * hd);
    const float scale = float(1.0 / std::sqrt(double(hd)));
    const int64_t block = 256;
    std::vector<float> scores(size_t(std::min(block, T) * T));
    for (int64_t head = 0; head < H; ++head) {
        const int64_t kvh = head / group;
        for (int64_t r0 = 0; r0 < T; r0 += block) {
            const int64_t r1 = std::min(T, r0 + block), rows = r1 - r0, keys = r1;
            gemm_nt(rows, keys, hd, scale, q.row(r0) + head * hd, q.cols, k.data.data() + kvh * hd, k.cols, 0.0f,
                    scores.data(), keys);
#pragma omp parallel for
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t i = r0 + r;
                const int64_t first = cfg_.sliding_window > 0 ? std::max<int64_t>(0, i - cfg_.sliding_window + 1) : 0;
                float* s = scores.data() + r * keys;
                float mx = -std::numeric_limits<float>::infinity();
                for (int64_t j = first; j <= i; ++j) mx = std::max(mx, s[j]);
                double sum = 0;
                for (int64_t j = 0; j < keys; ++j) {
                    float e = (j >= first && j <= i) ? std::exp(s[j] - mx) : 0.0f;
                    s[j] = e;
                    sum += e;
                }
                float inv = float(1.0 / sum);
                for (int64_t j = first; j <= i; ++j) s[j] *= inv;
            }
            gemm_nn(rows, hd, keys, 1.0f, scores.data(), keys, v.data.data() + kvh * hd, v.cols, 0.0f, out.row(r0) + head * hd,
                    out.cols);
        }
    }
    linear(out, a.o, x, 1.0f);
    if (!a.o_bias.empty()) add_bias(x, a.o_bias);
}

Matrix Transformer::mlp_input(int64_t l, const Matrix& x) const {
    Matrix h;
    rms_norm(x, w_.layers[size_t(l)].post_norm, cfg_.rms_eps, h);
    return h;
}

void Transformer::mlp_block(int64_t l, Matrix& x) const {
    const Mlp* mlp = w_.layers[size_t(l)].mlp.get();
    if (mlp == nullptr) fail("layer ", l, ": the MLP weights are not loaded (the model was loaded without them, MlpWeights::Skip)");
    Matrix y;
    mlp->forward(mlp_input(l, x), y);
#pragma omp parallel for
    for (int64_t i = 0; i < int64_t(x.data.size()); ++i) x.data[size_t(i)] += y.data[size_t(i)];
}

void Transformer::layer(int64_t l, Matrix& x) const {
    attention_block(l, x);
    mlp_block(l, x);
}

Matrix Transformer::logits(const Matrix& x, int64_t row0, int64_t rows) const {
    Matrix slice(rows, x.cols, std::vector<float>(x.row(row0), x.row(row0) + rows * x.cols));
    Matrix h, out;
    rms_norm(slice, w_.final_norm, cfg_.rms_eps, h);
    linear(h, cfg_.tie_embeddings ? w_.embed : w_.lm_head, out);
    return out;
}

Matrix Transformer::forward(std::span<const int32_t> tokens) const {
    Matrix x = embed(tokens);
    for (int64_t l = 0; l < cfg_.n_layers; ++l) layer(l, x);
    return logits(x, 0, x.rows);
}

double Transformer::sequence_nll(std::span<const int32_t> tokens) const {
    Matrix x = embed(tokens);
    for (int64_t l = 0; l < cfg_.n_layers; ++l) layer(l, x);
    const int64_t T = x.rows, chunk = 128;
    double nll = 0;
    for (int64_t r0 = 0; r0 + 1 < T; r0 += chunk) {
        const int64_t rows = std::min(chunk, T - 1 - r0);
        Matrix lg = logits(x, r0, rows);
        double part = 0;
#pragma omp parallel for reduction(+ : part)
        for (int64_t r = 0; r < rows; ++r) {
            const float* z = lg.row(r);
            float mx = *std::max_element(z, z + lg.cols);
            double sum = 0;
            for (int64_t c = 0; c < lg.cols; ++c) sum += std::exp(double(z[c] - mx));
            part += std::log(sum) + mx - z[tokens[size_t(r0 + r + 1)]];
        }
        nll += part;
    }
    return nll;
}

}  // namespace spense
