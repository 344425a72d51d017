// The CPU forward pass (float32, BLAS products) of every supported architecture, written as the
// pieces the pruning pipeline needs one decoder layer at a time:
//
//   x = embed(tokens)
//   per layer l:  x += attention_l(rmsnorm(x) * input_norm_l)          attention_block
//                 h  = rmsnorm(x) * post_norm_l                         mlp_input
//                 x += mlp_l(h)                                         mlp_block
//   logits = (rmsnorm(x) * final_norm) W_lm^T
//
// The MLP sits behind the Mlp interface so that pruned or Spense layers can replace it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/matrix.h"
#include "io/checkpoint.h"
#include "model/config.h"

namespace spense {

// One decoder layer's MLP: y = mlp(x) for x [n, hidden], y [n, hidden].
class Mlp {
public:
    virtual ~Mlp() = default;
    virtual void forward(const Matrix& x, Matrix& y) const = 0;
};

// The SwiGLU MLP with dense weights (pruned ones carry explicit zeros):
//   z = silu(x W_gate^T) * (x W_up^T),  y = z W_down^T
// with W_gate, W_up [d_ff, hidden] and W_down [hidden, d_ff].
class DenseMlp : public Mlp {
public:
    DenseMlp(Matrix gate, Matrix up, Matrix down);
    void forward(const Matrix& x, Matrix& y) const override;
    // The intermediate activation z [n, d_ff]: the input of down_proj.
    Matrix intermediate(const Matrix& x) const;

    Matrix gate, up, down;
};

// DenseMlp's three weights, in the order checkpoints and pruning states store them.
enum class MlpProj { Gate, Up, Down };

struct AttentionWeights {
    Matrix q, k, v, o;  // [heads*hd, hidden], [kv*hd, hidden], [kv*hd, hidden], [hidden, heads*hd]
    std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty when the architecture has none
    std::vector<float> q_norm, k_norm;                  // [hd] (Qwen3), else empty
};

struct LayerWeights {
    std::vector<float> input_norm, post_norm;  // [hidden]
    AttentionWeights attn;
    std::unique_ptr<Mlp> mlp;  // null while not loaded (MlpWeights::Skip)
};

struct ModelWeights {
    Matrix embed;    // [vocab, hidden]
    Matrix lm_head;  // [vocab, hidden]; empty when tied to embed
    std::vector<float> final_norm;
    std::vector<LayerWeights> layers;
};

// Whether loading decodes the MLPs, or leaves them null for a pipeline that loads one layer's MLP
// at a time (load_dense_mlp): they are the bulk of a model (3 x d_ff x hidden per layer), and a
// large model's float32 MLPs need not fit in host memory.
enum class MlpWeights { Load, Skip };

// Decodes every weight to float32 (with Skip, all but the MLPs), checking each shape against the
// config; skipped MLP tensors are checked for presence and shape, so that a damaged checkpoint
// fails before any work rather than at its layer.
ModelWeights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, MlpWeights mlps = MlpWeights::Load);
// The MLP weights of one layer only.
std::unique_ptr<DenseMlp> load_dense_mlp(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer);

class Transformer {
public:
    Transformer(ModelConfig cfg, ModelWeights w);

    const ModelConfig& config() const { return cfg_; }
    ModelWeights& weights() { return w_; }
    const ModelWeights& weights() const { return w_; }

    // Token embeddings [T, hidden]; ids outside the vocabulary are an error.
    Matrix embed(std::span<const int32_t> tokens) const;
    // x += attention(rmsnorm(x)) for layer l, tokens at positions 0..T-1 of one sequence.
    void attention_block(int64_t l, Matrix& x) const;
    // The MLP input of layer l: rmsnorm(x) * post_norm.
    Matrix mlp_input(int64_t l, const Matrix& x) const;
    // x += mlp(mlp_input(x)) for layer l; an error naming the layer if its MLP is not loaded.
    void mlp_block(int64_t l, Matrix& x) const;
    // One whole decoder layer: attention_block then mlp_block.
    void layer(int64_t l, Matrix& x) const;

    // Logits [rows, vocab] of hidden states x[row0 : row0+rows] (final norm applied here).
    Matrix logits(const Matrix& x, int64_t row0, int64_t rows) const;
    // Logits of every position of one sequence [T, vocab].
    Matrix forward(std::span<const int32_t> tokens) const;
    // Sum over positions t of -log p(tokens[t+1] | tokens[..t]): T-1 predictions, in float64.
    double sequence_nll(std::span<const int32_t> tokens) const;

private:
    ModelConfig cfg_;
    ModelWeights w_;
    std::vector<double> inv_freq_;
};

// The float32 model of a checkpoint: config parsed and checked, every weight (with Skip, all but
// the MLPs) decoded.
Transformer load_transformer(const Checkpoint& ckpt, MlpWeights mlps = MlpWeights::Load);

// y = x / sqrt(mean(x^2) + eps) * weight, per row.
void rms_norm(const Matrix& x, const std::vector<float>& weight, double eps, Matrix& y);

}  // namespace spense
