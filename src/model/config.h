// The architectures spense runs and their hyper-parameters, read from an HF config.json.
//
// Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias),
// Qwen3ForCausalLM (per-head RMSNorm of q and k). All are pre-norm decoders with RMSNorm, GQA
// attention with half-split RoPE, and a SwiGLU MLP: down(silu(gate(x)) * up(x)).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace spense {

enum class Arch { Llama, Mistral, Qwen2, Qwen3 };

struct RopeScaling {
    enum class Type { None, Linear, Llama3 } type = Type::None;
    double factor = 1.0;
    double low_freq_factor = 1.0;        // Llama3 only
    double high_freq_factor = 4.0;       // Llama3 only
    double original_max_positions = 8192;  // Llama3 only
};

struct ModelConfig {
    std::string architecture;  // the HF class name
    Arch arch = Arch::Llama;
    int64_t hidden = 0;
    int64_t intermediate = 0;  // d_ff
    int64_t n_layers = 0;
    int64_t n_heads = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t vocab = 0;
    int64_t max_positions = 0;
    double rope_theta = 10000.0;
    RopeScaling rope_scaling;
    double rms_eps = 1e-6;
    bool tie_embeddings = false;
    bool qkv_bias = false;  // biases on q, k, v projections
    bool o_bias = false;    // bias on the output projection
    bool qk_norm = false;   // Qwen3: RMSNorm over each head of q and k before RoPE
    int64_t sliding_window = 0;  // 0: full causal attention

    // Throws spense::Error naming `source` and the problem: an unsupported architecture (by name),
    // activation or RoPE scaling, a missing or inconsistent field.
    static ModelConfig from_hf(const nlohmann::json& config, const std::string& source);

    // RoPE inverse frequencies for the head_dim/2 rotation pairs, with scaling applied.
    std::vector<double> rope_inv_freq() const;
};

// HF tensor names of layer `l`, e.g. layer_tensor(3, "mlp.up_proj.weight").
std::string layer_tensor(int64_t l, const std::string& suffix);

}  // namespace spense
