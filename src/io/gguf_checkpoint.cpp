// GGUF models of the llama architecture (Llama, Mistral and SmolLM convert to it) as a checkpoint
// in HF naming. llama.cpp's converter permutes the rows of attn_q/attn_k into interleaved RoPE
// order; they are marked for reordering back to HF's half-split order when decoded.
#include <regex>

#include "core/error.h"
#include "io/checkpoint_formats.h"
#include "io/gguf.h"

namespace spense::detail {

namespace {

// GGUF tensor name -> HF name; an empty result means the tensor is not part of the HF model.
std::string hf_name(const std::string& g) {
    static const std::map<std::string, std::string> global = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
    };
    static const std::map<std::string, std::string> layer = {
        {"attn_norm.weight", "input_layernorm.weight"},   {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},     {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_output.weight", "self_attn.o_proj.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},      {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"},
    };
    if (auto it = global.find(g); it != global.end()) return it->second;
    static const std::regex blk(R"(blk\.(\d+)\.(.+))");
    std::smatch m;
    if (std::regex_match(g, m, blk)) {
        if (auto it = layer.find(m[2].str()); it != layer.end()) return "model.layers." + m[1].str() + "." + it->second;
    }
    return {};
}

}  // namespace

Checkpoint open_gguf(const std::filesystem::path& file) {
    GgufFile g = GgufFile::open(file);
    const std::string& p = g.path();
    std::string arch = g.get_string("general.architecture");
    if (arch != "llama")
        fail(p, ": GGUF architecture '", arch, "' is not supported (spense reads GGUF models of the llama architecture; "
                "load other models from their HF safetensors checkpoint)");

    Checkpoint ckpt;
    ckpt.format = CheckpointFormat::Gguf;
    ckpt.path = file;
    ckpt.files.push_back(g.file());
    const int64_t heads = g.get_int("llama.attention.head_count");
    const int64_t kv_heads = g.has("llama.attention.head_count_kv") ? g.get_int("llama.attention.head_count_kv") : heads;
    const int64_t dim = g.get_int("llama.embedding_length");
    const int64_t head_dim = g.has("llama.rope.dimension_count") ? g.get_int("llama.rope.dimension_count") : dim / heads;
    if (head_dim * heads != dim)
        fail(p, ": GGUF llama model with head dimension ", head_dim, " x ", heads, " heads != embedding ", dim, " is not supported");

    for (const auto& t : g.tensors()) {
        if (t.name == "rope_freqs.weight")
            fail(p, ": GGUF model carries rope_freqs (per-dimension RoPE scaling, as Llama 3.1 conversions do), which spense "
                    "does not read; load the HF checkpoint instead");
        std::string name = hf_name(t.name);
        if (name.empty()) fail(p, ": unexpected tensor '", t.name, "' for a GGUF llama model");
        TensorRef r;
        r.dtype = t.dtype;
        r.shape.assign(t.dims.rbegin(), t.dims.rend());
        r.data = t.data;
        r.nbytes = t.nbytes;
        r.file = p;
        if (t.name.ends_with("attn_q.weight")) r.rope_heads = heads;
        if (t.name.ends_with("attn_k.weight")) r.rope_heads = kv_heads;
        ckpt.tensors.emplace(name, r);
    }

    const auto& embed = ckpt.tensor("model.embed_tokens.weight");
    int64_t vocab = g.has("llama.vocab_size") ? g.get_int("llama.vocab_size") : embed.shape[0];
    nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}},
                          {"model_type", "llama"},
                          {"hidden_size", dim},
                          {"intermediate_size", g.get_int("llama.feed_forward_length")},
                          {"num_hidden_layers", g.get_int("llama.block_count")},
                          {"num_attention_heads", heads},
                          {"num_key_value_heads", kv_heads},
                          {"head_dim", head_dim},
                          {"vocab_size", vocab},
                          {"max_position_embeddings", g.get_int("llama.context_length")},
                          {"rope_theta", g.has("llama.rope.freq_base") ? g.get_float("llama.rope.freq_base") : 10000.0},
                          {"rms_norm_eps", g.get_float("llama.attention.layer_norm_rms_epsilon")},
                          {"hidden_act", "silu"},
                          {"tie_word_embeddings", !ckpt.has("lm_head.weight")},
                          {"torch_dtype", "float32"}};
    if (g.has("llama.rope.scaling.type")) {
        std::string type = g.get_string("llama.rope.scaling.type");
        if (type == "linear") {
            cfg["rope_scaling"] = {{"rope_type", "linear"}, {"factor", g.get_float("llama.rope.scaling.factor")}};
        } else if (type != "none") {
            fail(p, ": GGUF RoPE scaling '", type, "' is not supported (none and linear are)");
        }
    }
    if (g.has("tokenizer.ggml.bos_token_id")) cfg["bos_token_id"] = g.get_int("tokenizer.ggml.bos_token_id");
    if (g.has("tokenizer.ggml.eos_token_id")) cfg["eos_token_id"] = g.get_int("tokenizer.ggml.eos_token_id");
    ckpt.config = std::move(cfg);
    if (g.has("tokenizer.ggml.model")) ckpt.tokenizer = load_gguf_tokenizer(g);
    return ckpt;
}

}  // namespace spense::detail
