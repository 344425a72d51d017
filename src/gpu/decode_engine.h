// The GPU decode engine: greedy decoding of a batch of sequences, one token per sequence per step,
// for every architecture the loader supports (model/config.h), with dense or Spense MLPs.
//
// One step, per layer l (decode_kernels.h gives each fused step and the scaling convention):
//   x += (previous sublayer);  a = quant(rmsnorm(x) * input_norm)        add_norm_quantize
//   qkv = a W_qkv^T                                                      one GEMM for q | k | v
//   q, k, v: bias, q/k RMSNorm (Qwen3), RoPE; k, v appended to the cache;
//   o = attention(q, cache) (flash-decoding, GQA), quantized              one kernel, decode_attention.h
//   x += o W_o^T;  a = quant(rmsnorm(x) * post_norm)                      GEMM, add_norm_quantize
//   h = a W_gate_up^T: output-split (2:4 rows | dense rows)               Spense MLP (spense_mlp.h)
//   z = quant(silu(gate) * up);  y = z W_down^T: input-split              swiglu_quantize, Spense MLP
// then x += y of the last layer, the final norm, the LM head GEMM, and greedy sampling, which writes
// the next tokens and advances the lengths on the device. The residual stream x is float32; the
// GEMMs read FP8 (E4M3, per-output-channel weight scales, per-token activation scales) or BF16 and
// write BF16 (FP8) or float32 (BF16, where their rounding was up to half of the logit error); the
// KV cache is BF16. A dense MLP is the Spense MLP with every index dense.
//
// Every step after the first replays one CUDA graph captured from the second step (the first runs
// eagerly so that the GEMMs search their algorithms outside the capture; then the MLPs' pair of 2:4
// backends and each role of cuBLASLt GEMM (qkv, o, the MLPs' dense gate_up and down) take what makes
// the whole step fastest (tune_gemms), after which every 2:4 weight keeps only the format its
// chosen kernel reads). The step reads tokens and per-sequence lengths from device memory, so the same
// graph serves every position.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "core/matrix.h"
#include "gpu/gemm_dtype.h"
#include "io/checkpoint.h"
#include "model/config.h"

namespace spense {
class Transformer;
}

namespace spense::gpu {

class GpuContext;

struct DecodeOptions {
    GemmDType dtype = GemmDType::FP8;  // of every linear layer's weights and inputs
    int64_t batch = 1;                 // sequences decoded together
    int64_t max_ctx = 0;               // KV-cache capacity per sequence, in tokens
};

class DecodeEngine {
public:
    // A dense HF checkpoint, or spense prune's output (spense.json beside the weights: Spense MLPs).
    static std::unique_ptr<DecodeEngine> load(GpuContext& ctx, const Checkpoint& ckpt, const DecodeOptions& opt);
    // A model in memory, each layer's MLP in the runtime layout with the last dense_counts[l]
    // intermediate indices dense; `source` names it in errors.
    static std::unique_ptr<DecodeEngine> from_model(GpuContext& ctx, const Transformer& model, const std::vector<int64_t>& dense_counts,
                                                    const DecodeOptions& opt, const std::string& source);
    // Random weights on the GPU for a configuration whose weights we do not have; every MLP keeps
    // `dense` dense intermediate indices (cfg.intermediate: a dense MLP, 0: all 2:4).
    static std::unique_ptr<DecodeEngine> random(GpuContext& ctx, const ModelConfig& cfg, int64_t dense, const DecodeOptions& opt,
                                                uint64_t seed);
    ~DecodeEngine();

    const ModelConfig& config() const;
    const DecodeOptions& options() const;

    // Sets how many tokens each sequence has in the cache (all 0: fresh sequences; benchmarks set a
    // context whose cache holds whatever was there). Size batch; each < max_ctx.
    void set_lengths(std::span<const int32_t> lengths);
    // One step: sequence r appends tokens[r] (size batch), or, without tokens, the token the
    // previous step chose for it. Throws when a sequence would exceed max_ctx.
    void step(std::span<const int32_t> tokens);
    void step();
    // Benchmarks: replays a graph of only some parts of a step (kGemms | kAttention |
    // kElementwise: norms, RoPE, SwiGLU, embedding, sampling), captured on first use, to time them
    // apart. What it computes is meaningless and the lengths it leaves are not tracked: call
    // set_lengths before the next step. Needs one whole step before.
    static constexpr unsigned kGemms = 1, kAttention = 2, kElementwise = 4, kAllParts = 7;
    void step_parts(unsigned parts);

    // The greedy choices of the last step [batch], and its logits [batch, vocab] (synchronize).
    std::vector<int32_t> next_tokens();
    Matrix logits();

    // What a step streams from memory: every weight and scale once (the embedding rows it reads
    // aside), and the KV cache of sequences holding `cached` tokens each.
    double weight_bytes() const;
    // The 2:4 backends the MLPs run this batch with ("gate_up cusparselt, down native"; distinct
    // ones joined by " | "; empty where no MLP has a 2:4 region). Needs one whole step before.
    std::string mlp_backends();
    // The cuBLASLt roles whose GEMMs write k's halves apart this batch (gemm.h; "o, down", or empty).
    // Needs one whole step before.
    std::string k_halves();
    double kv_bytes(int64_t cached) const;

    cudaStream_t stream() const;

private:
    struct State;
    explicit DecodeEngine(std::unique_ptr<State> s);
    void enqueue_step(unsigned parts);
    void launch_graph(unsigned parts);
    bool tune_gemms(const std::vector<int32_t>& lengths);
    std::unique_ptr<State> s_;
};

}  // namespace spense::gpu
