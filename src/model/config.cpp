#include "model/config.h"

#include <cmath>

#include "core/error.h"

namespace spense {

namespace {

int64_t get_int(const nlohmann::json& c, const char* key, const std::string& src) {
    if (!c.contains(key) || !c[key].is_number_integer()) fail(src, ": config field '", key, "' is missing or not an integer");
    return c[key].get<int64_t>();
}

double get_num(const nlohmann::json& c, const char* key, double def) {
    return c.contains(key) && c[key].is_number() ? c[key].get<double>() : def;
}

bool get_bool(const nlohmann::json& c, const char* key, bool def) {
    return c.contains(key) && c[key].is_boolean() ? c[key].get<bool>() : def;
}

}  // namespace

std::string layer_tensor(int64_t l, const std::string& suffix) { return "model.layers." + std::to_string(l) + "." + suffix; }

ModelConfig ModelConfig::from_hf(const nlohmann::json& c, const std::string& src) {
    ModelConfig m;
    if (!c.contains("architectures") || !c["architectures"].is_array() || c["architectures"].empty() || !c["architectures"][0].is_string())
        fail(src, ": config has no 'architectures' entry");
    m.architecture = c["architectures"][0].get<std::string>();
    if (m.architecture == "LlamaForCausalLM") m.arch = Arch::Llama;
    else if (m.architecture == "MistralForCausalLM") m.arch = Arch::Mistral;
    else if (m.architecture == "Qwen2ForCausalLM") m.arch = Arch::Qwen2;
    else if (m.architecture == "Qwen3ForCausalLM") m.arch = Arch::Qwen3;
    else
        fail(src, ": architecture '", m.architecture, "' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, "
                  "Qwen2ForCausalLM, Qwen3ForCausalLM)");

    m.hidden = get_int(c, "hidden_size", src);
    m.intermediate = get_int(c, "intermediate_size", src);
    m.n_layers = get_int(c, "num_hidden_layers", src);
    m.n_heads = get_int(c, "num_attention_heads", src);
    m.n_kv_heads = c.contains("num_key_value_heads") && !c["num_key_value_heads"].is_null() ? get_int(c, "num_key_value_heads", src) : m.n_heads;
    m.vocab = get_int(c, "vocab_size", src);
    m.max_positions = c.contains("max_position_embeddings") ? get_int(c, "max_position_embeddings", src) : 2048;
    m.head_dim = c.contains("head_dim") && !c["head_dim"].is_null() ? get_int(c, "head_dim", src) : (m.n_heads > 0 ? m.hidden / m.n_heads : 0);
    // transformers 4 writes rope_theta and rope_scaling; transformers 5 folds both into rope_parameters.
    const nlohmann::json none = nlohmann::json::object();
    const nlohmann::json& rope_params = c.contains("rope_parameters") && c["rope_parameters"].is_object() ? c["rope_parameters"] : none;
    m.rope_theta = get_num(c, "rope_theta", get_num(rope_params, "rope_theta", 10000.0));
    m.rms_eps = get_num(c, "rms_norm_eps", 1e-6);
    m.tie_embeddings = get_bool(c, "tie_word_embeddings", false);

    for (auto [v, name] : {std::pair{m.hidden, "hidden_size"}, {m.intermediate, "intermediate_size"}, {m.n_layers, "num_hidden_layers"},
                           {m.n_heads, "num_attention_heads"}, {m.n_kv_heads, "num_key_value_heads"}, {m.vocab, "vocab_size"},
                           {m.head_dim, "head_dim"}})
        if (v <= 0) fail(src, ": config field '", name, "' must be positive (got ", v, ")");
    if (m.n_heads % m.n_kv_heads != 0)
        fail(src, ": num_attention_heads ", m.n_heads, " is not a multiple of num_key_value_heads ", m.n_kv_heads);
    if (m.head_dim % 2 != 0) fail(src, ": head_dim ", m.head_dim, " is odd; RoPE needs pairs");

    std::string act = c.value("hidden_act", std::string("silu"));
    if (act != "silu") fail(src, ": hidden_act '", act, "' is not supported (the SwiGLU MLP needs silu)");
    if (get_bool(c, "mlp_bias", false)) fail(src, ": mlp_bias = true is not supported");

    switch (m.arch) {
        case Arch::Qwen2:
            m.qkv_bias = true;
            break;
        case Arch::Qwen3:
            m.qk_norm = true;
            m.qkv_bias = m.o_bias = get_bool(c, "attention_bias", false);
            break;
        case Arch::Llama:
        case Arch::Mistral:
            m.qkv_bias = m.o_bias = get_bool(c, "attention_bias", false);
            break;
    }
    if (m.arch == Arch::Mistral && c.contains("sliding_window") && c["sliding_window"].is_number_integer())
        m.sliding_window = c["sliding_window"].get<int64_t>();
    if ((m.arch == Arch::Qwen2 || m.arch == Arch::Qwen3) && get_bool(c, "use_sliding_window", false))
        fail(src, ": use_sliding_window = true is not supported for ", m.architecture);
    if (c.contains("layer_types") && c["layer_types"].is_array())
        for (const auto& t : c["layer_types"])
            if (t != "full_attention")
                fail(src, ": layer type ", t.dump(), " is not supported (only full_attention layers are)");

    {
        const auto& rs = c.contains("rope_scaling") && c["rope_scaling"].is_object() ? c["rope_scaling"] : rope_params;
        std::string type = rs.value("rope_type", rs.value("type", std::string("default")));
        if (type == "linear") {
            m.rope_scaling.type = RopeScaling::Type::Linear;
            m.rope_scaling.factor = get_num(rs, "factor", 1.0);
        } else if (type == "llama3") {
            m.rope_scaling.type = RopeScaling::Type::Llama3;
            m.rope_scaling.factor = get_num(rs, "factor", 8.0);
            m.rope_scaling.low_freq_factor = get_num(rs, "low_freq_factor", 1.0);
            m.rope_scaling.high_freq_factor = get_num(rs, "high_freq_factor", 4.0);
            m.rope_scaling.original_max_positions = get_num(rs, "original_max_position_embeddings", 8192);
        } else if (type != "default") {
            fail(src, ": rope_scaling type '", type, "' is not supported (default, linear and llama3 are)");
        }
    }
    return m;
}

std::vector<double> ModelConfig::rope_inv_freq() const {
    const int64_t half = head_dim / 2;
    std::vector<double> inv(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) inv[size_t(i)] = 1.0 / std::pow(rope_theta, double(2 * i) / double(head_dim));
    const RopeScaling& s = rope_scaling;
    if (s.type == RopeScaling::Type::Linear) {
        for (double& f : inv) f /= s.factor;
    } else if (s.type == RopeScaling::Type::Llama3) {
        // Long wavelengths are slowed by `factor`, short ones kept, and the band between the two
        // cut-offs interpolated smoothly (Llama 3.1's scheme).
        const double low_wavelen = s.original_max_positions / s.low_freq_factor;
        const double high_wavelen = s.original_max_positions / s.high_freq_factor;
        for (double& f : inv) {
            double wavelen = 2.0 * M_PI / f;
            if (wavelen > low_wavelen) {
                f /= s.factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (s.original_max_positions / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                f = (1.0 - smooth) * f / s.factor + smooth * f;
            }
        }
    }
    return inv;
}

}  // namespace spense
