// llama2.c checkpoints, legacy (version 0) layout:
//  header: int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//          (vocab_size < 0: the classifier is stored separately instead of tied to the embedding)
//  float32 tensors, each [out, in] per layer, all layers back to back:
//    token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
//    wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim],
//    w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
//    two unused RoPE tables [seq_len, head_size/2] each, then wcls [vocab, dim] if untied.
// Queries and keys use interleaved RoPE (pairs 2i, 2i+1), so wq and wk are marked for reordering
// to HF's half-split layout when decoded. RoPE theta 10000, RMSNorm eps 1e-5, SwiGLU.
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "io/checkpoint_formats.h"

namespace spense::detail {

namespace {

std::filesystem::path find_tokenizer(const std::filesystem::path& model) {
    auto dir = model.parent_path().empty() ? std::filesystem::path(".") : model.parent_path();
    if (std::filesystem::exists(dir / "tokenizer.bin")) return dir / "tokenizer.bin";
    std::vector<std::filesystem::path> candidates;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        auto name = e.path().filename().string();
        if (e.is_regular_file() && name.rfind("tok", 0) == 0 && e.path().extension() == ".bin") candidates.push_back(e.path());
    }
    return candidates.size() == 1 ? candidates[0] : std::filesystem::path();
}

}  // namespace

Checkpoint open_llama2c(const std::filesystem::path& file) {
    Checkpoint ckpt;
    ckpt.format = CheckpointFormat::Llama2c;
    ckpt.path = file;
    auto mf = MappedFile::open(file);
    ckpt.files.push_back(mf);
    const std::string& p = mf->path();
    if (mf->size() < 28) fail(p, ": not a checkpoint spense recognises (too short for a llama2.c header; expected a HF directory, a GGUF file or a llama2.c .bin)");
    int32_t h[7];
    std::memcpy(h, mf->data(), sizeof(h));
    if (uint32_t(h[0]) == 0x616b3432u)
        fail(p, ": llama2.c export version ", h[1], " is not supported (re-export with the legacy version-0 layout)");
    const int64_t dim = h[0], hidden = h[1], L = h[2], heads = h[3], kv_heads = h[4], seq_len = h[6];
    const bool shared = h[5] > 0;
    const int64_t vocab = std::abs(int64_t(h[5]));
    auto plausible = [](int64_t v, int64_t max) { return v > 0 && v <= max; };
    if (!plausible(dim, 1 << 16) || !plausible(hidden, 1 << 18) || !plausible(L, 1024) || !plausible(heads, 1024) ||
        !plausible(kv_heads, 1024) || !plausible(vocab, 1 << 22) || !plausible(seq_len, 1 << 22) || dim % heads != 0 ||
        heads % kv_heads != 0 || (dim / heads) % 2 != 0)
        fail(p, ": not a checkpoint spense recognises (as a llama2.c header it reads dim=", dim, " hidden=", hidden,
             " layers=", L, " heads=", heads, " kv_heads=", kv_heads, " vocab=", h[5], " seq_len=", seq_len,
             "; expected a HF directory, a GGUF file or a llama2.c .bin)");
    const int64_t hd = dim / heads, kv_dim = kv_heads * hd;

    size_t offset = 28;
    auto take = [&](const std::string& name, std::vector<int64_t> shape, int64_t rope_heads = 0) {
        TensorRef t;
        t.dtype = DType::F32;
        t.shape = std::move(shape);
        t.nbytes = size_t(t.numel()) * 4;
        t.file = p;
        t.rope_heads = rope_heads;
        if (offset + t.nbytes > mf->size())
            fail(p, ": truncated llama2.c checkpoint (", name, " needs bytes up to ", offset + t.nbytes, ", file has ", mf->size(), ")");
        t.data = mf->data() + offset;
        offset += t.nbytes;
        ckpt.tensors.emplace(name, t);
    };
    auto per_layer = [&](const std::string& suffix, std::vector<int64_t> shape, int64_t rope_heads = 0) {
        for (int64_t l = 0; l < L; ++l) take("model.layers." + std::to_string(l) + "." + suffix, shape, rope_heads);
    };
    take("model.embed_tokens.weight", {vocab, dim});
    per_layer("input_layernorm.weight", {dim});
    per_layer("self_attn.q_proj.weight", {dim, dim}, heads);
    per_layer("self_attn.k_proj.weight", {kv_dim, dim}, kv_heads);
    per_layer("self_attn.v_proj.weight", {kv_dim, dim});
    per_layer("self_attn.o_proj.weight", {dim, dim});
    per_layer("post_attention_layernorm.weight", {dim});
    per_layer("mlp.gate_proj.weight", {hidden, dim});
    per_layer("mlp.down_proj.weight", {dim, hidden});
    per_layer("mlp.up_proj.weight", {hidden, dim});
    take("model.norm.weight", {dim});
    offset += size_t(seq_len * hd) * 4;  // the two legacy RoPE tables
    if (!shared) take("lm_head.weight", {vocab, dim});
    if (offset != mf->size())
        fail(p, ": llama2.c checkpoint size mismatch (the header implies ", offset, " bytes, the file has ", mf->size(), ")");

    ckpt.config = {{"architectures", {"LlamaForCausalLM"}},
                   {"model_type", "llama"},
                   {"hidden_size", dim},
                   {"intermediate_size", hidden},
                   {"num_hidden_layers", L},
                   {"num_attention_heads", heads},
                   {"num_key_value_heads", kv_heads},
                   {"vocab_size", vocab},
                   {"max_position_embeddings", seq_len},
                   {"rope_theta", 10000.0},
                   {"rms_norm_eps", 1e-5},
                   {"hidden_act", "silu"},
                   {"tie_word_embeddings", shared},
                   {"bos_token_id", 1},
                   {"eos_token_id", 2},
                   {"torch_dtype", "float32"}};

    auto tok = find_tokenizer(file);
    if (!tok.empty()) ckpt.tokenizer = load_llama2c_tokenizer(tok);
    return ckpt;
}

}  // namespace spense::detail
