#include "format/hf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace spense {

namespace {

const char* torch_dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "float32";
        case DType::BF16: return "bfloat16";
        case DType::F16: return "float16";
        default: fail("checkpoints cannot be written as ", dtype_name(t), " (use F32, BF16 or F16)");
    }
}

// Fills a tensor's bytes with `v` encoded as `dtype`.
std::function<void(std::span<uint8_t>)> encoder(const std::vector<float>& v, DType dtype) {
    return [&v, dtype](std::span<uint8_t> out) {
        if (dtype == DType::F32) {
            std::memcpy(out.data(), v.data(), out.size());
            return;
        }
        auto* o = reinterpret_cast<uint16_t*>(out.data());
#pragma omp parallel for
        for (int64_t i = 0; i < int64_t(v.size()); ++i) o[i] = dtype == DType::BF16 ? f32_to_bf16(v[size_t(i)]) : f32_to_f16(v[size_t(i)]);
    };
}

// The token text of `id` in an HF tokenizer.json (added tokens first, then the model's vocab).
std::string token_text(const nlohmann::json& tok, int32_t id) {
    if (tok.contains("added_tokens"))
        for (const auto& a : tok["added_tokens"])
            if (a.value("id", -1) == id) return a.value("content", "");
    for (const auto& [text, v] : tok["model"]["vocab"].items())
        if (v.is_number_integer() && v.get<int32_t>() == id) return text;
    return {};
}

void write_tokenizer(const std::filesystem::path& dir, const Checkpoint& src, const ModelConfig& cfg) {
    if (src.format == CheckpointFormat::HfSafetensors) {
        for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
                                 "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja", "chat_template.json"})
            if (std::filesystem::exists(src.path / name)) std::filesystem::copy_file(src.path / name, dir / name);
        return;
    }
    if (!src.tokenizer) return;
    const nlohmann::json tok = src.tokenizer->to_hf_json();
    write_file_atomic(dir / "tokenizer.json", tok.dump(2) + "\n");
    nlohmann::json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                         {"add_bos_token", src.tokenizer->add_bos()},
                         {"model_max_length", cfg.max_positions}};
    if (auto b = src.tokenizer->bos_id()) tc["bos_token"] = token_text(tok, *b);
    if (auto e = src.tokenizer->eos_id()) tc["eos_token"] = token_text(tok, *e);
    write_file_atomic(dir / "tokenizer_config.json", tc.dump(2) + "\n");
}

// Makes a directory's entries durable (the files themselves were synced when written).
void sync_dir(const std::filesystem::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}

}  // namespace

void check_new_output_dir(const std::filesystem::path& out_dir) {
    std::error_code ec;
    if (std::filesystem::exists(out_dir, ec))
        fail(out_dir.string(), ": output directory already exists (choose another --out or remove it; spense never overwrites)");
    auto parent = out_dir.has_parent_path() ? out_dir.parent_path() : std::filesystem::path(".");
    if (!std::filesystem::is_directory(parent, ec)) fail(out_dir.string(), ": parent directory ", parent.string(), " does not exist");
}

std::vector<TensorData> hf_tensors(const Transformer& model, DType dtype, const MlpBytes& mlp_bytes) {
    torch_dtype_name(dtype);  // refuses the types a checkpoint cannot hold
    const ModelConfig& c = model.config();
    const ModelWeights& w = model.weights();
    std::vector<TensorData> out;
    auto mat = [&](const std::string& name, const Matrix& m) { out.push_back({name, dtype, {m.rows, m.cols}, encoder(m.data, dtype)}); };
    auto vec = [&](const std::string& name, const std::vector<float>& v) {
        if (!v.empty()) out.push_back({name, dtype, {int64_t(v.size())}, encoder(v, dtype)});
    };
    mat("model.embed_tokens.weight", w.embed);
    for (int64_t l = 0; l < c.n_layers; ++l) {
        const LayerWeights& lw = w.layers[size_t(l)];
        auto n = [l](const char* s) { return layer_tensor(l, s); };
        vec(n("input_layernorm.weight"), lw.input_norm);
        mat(n("self_attn.q_proj.weight"), lw.attn.q);
        mat(n("self_attn.k_proj.weight"), lw.attn.k);
        mat(n("self_attn.v_proj.weight"), lw.attn.v);
        mat(n("self_attn.o_proj.weight"), lw.attn.o);
        vec(n("self_attn.q_proj.bias"), lw.attn.q_bias);
        vec(n("self_attn.k_proj.bias"), lw.attn.k_bias);
        vec(n("self_attn.v_proj.bias"), lw.attn.v_bias);
        vec(n("self_attn.o_proj.bias"), lw.attn.o_bias);
        vec(n("self_attn.q_norm.weight"), lw.attn.q_norm);
        vec(n("self_attn.k_norm.weight"), lw.attn.k_norm);
        vec(n("post_attention_layernorm.weight"), lw.post_norm);
        if (lw.mlp) {
            const auto* mlp = dynamic_cast<const DenseMlp*>(lw.mlp.get());
            SPENSE_CHECK(mlp != nullptr, "layer ", l, ": only dense MLP weights can be written");
            mat(n("mlp.gate_proj.weight"), mlp->gate);
            mat(n("mlp.up_proj.weight"), mlp->up);
            mat(n("mlp.down_proj.weight"), mlp->down);
            continue;
        }
        if (!mlp_bytes) fail("layer ", l, ": the MLP weights are neither loaded nor given, so they cannot be written");
        auto from = [&mlp_bytes, l](MlpProj p) { return [mlp_bytes, l, p](std::span<uint8_t> b) { mlp_bytes(l, p, b); }; };
        out.push_back({n("mlp.gate_proj.weight"), dtype, {c.intermediate, c.hidden}, from(MlpProj::Gate)});
        out.push_back({n("mlp.up_proj.weight"), dtype, {c.intermediate, c.hidden}, from(MlpProj::Up)});
        out.push_back({n("mlp.down_proj.weight"), dtype, {c.hidden, c.intermediate}, from(MlpProj::Down)});
    }
    vec("model.norm.weight", w.final_norm);
    if (!c.tie_embeddings) mat("lm_head.weight", w.lm_head);
    return out;
}

void write_hf_checkpoint(const std::filesystem::path& out_dir, const Checkpoint& source, const Transformer& model, DType dtype,
                         const nlohmann::json& spense_json) {
    write_hf_checkpoint(out_dir, source, model.config(), hf_tensors(model, dtype), dtype, spense_json);
}

void write_hf_checkpoint(const std::filesystem::path& out_dir, const Checkpoint& source, const ModelConfig& cfg,
                         const std::vector<TensorData>& tensors, DType dtype, const nlohmann::json& spense_json, uint64_t shard_bytes) {
    check_new_output_dir(out_dir);
    for (const auto& t : tensors)
        SPENSE_CHECK(t.dtype == dtype, "tensor '", t.name, "' is ", dtype_name(t.dtype), " in a checkpoint written as ", dtype_name(dtype));
    const std::filesystem::path parent = out_dir.has_parent_path() ? out_dir.parent_path() : std::filesystem::path(".");
    const std::filesystem::path tmp = parent / cat(".", out_dir.filename().string(), ".partial-", ::getpid());
    std::filesystem::remove_all(tmp);
    std::filesystem::create_directory(tmp);
    struct Cleanup {
        std::filesystem::path dir;
        bool keep = false;
        ~Cleanup() {
            std::error_code ec;
            if (!keep) std::filesystem::remove_all(dir, ec);
        }
    } cleanup{tmp};

    nlohmann::json config = source.config;
    config["torch_dtype"] = torch_dtype_name(dtype);
    if (config.contains("dtype")) config["dtype"] = torch_dtype_name(dtype);
    write_file_atomic(tmp / "config.json", config.dump(2) + "\n");

    uint64_t total = 0;
    for (const auto& t : tensors) total += t.nbytes();
    const nlohmann::json st_meta = {{"format", "pt"}};
    if (total <= shard_bytes) {
        write_safetensors(tmp / "model.safetensors", tensors, st_meta);
    } else {
        std::vector<std::vector<TensorData>> shards(1);
        uint64_t in_shard = 0;
        for (const auto& t : tensors) {
            if (in_shard > 0 && in_shard + t.nbytes() > shard_bytes) {
                shards.emplace_back();
                in_shard = 0;
            }
            shards.back().push_back(t);
            in_shard += t.nbytes();
        }
        nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", nlohmann::json::object()}};
        for (size_t i = 0; i < shards.size(); ++i) {
            char name[64];
            std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
            write_safetensors(tmp / name, shards[i], st_meta);
            for (const auto& t : shards[i]) index["weight_map"][t.name] = name;
        }
        write_file_atomic(tmp / "model.safetensors.index.json", index.dump(2) + "\n");
    }
    write_tokenizer(tmp, source, cfg);
    write_file_atomic(tmp / "spense.json", spense_json.dump(2) + "\n");
    sync_dir(tmp);

    check_new_output_dir(out_dir);
    std::error_code ec;
    std::filesystem::rename(tmp, out_dir, ec);
    if (ec) fail(out_dir.string(), ": cannot move the finished checkpoint into place (", ec.message(), ")");
    cleanup.keep = true;
    sync_dir(parent);
}

}  // namespace spense
