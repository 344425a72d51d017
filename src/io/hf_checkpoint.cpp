// HuggingFace checkpoint directories: config.json + model.safetensors, or shards listed in
// model.safetensors.index.json ({"weight_map": {tensor name: shard file}}).
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/checkpoint_formats.h"
#include "io/safetensors.h"

namespace spense {

nlohmann::json read_json_file(const std::filesystem::path& p) {
    std::ifstream in(p);
    if (!in) fail(p.string(), ": cannot open");
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail(p.string(), ": not valid JSON (", e.what(), ")");
    }
}

}  // namespace spense

namespace spense::detail {

namespace {

void add_shard(Checkpoint& ckpt, const std::filesystem::path& file, const std::set<std::string>* expected) {
    SafetensorsFile st = read_safetensors(file);
    ckpt.files.push_back(st.file);
    for (auto& [name, t] : st.tensors) {
        if (expected != nullptr && expected->count(name) == 0) continue;  // the index is authoritative
        if (!ckpt.tensors.emplace(name, t).second) fail(file.string(), ": tensor '", name, "' appears in two shards");
    }
}

}  // namespace

Checkpoint open_hf_directory(const std::filesystem::path& dir) {
    Checkpoint ckpt;
    ckpt.format = CheckpointFormat::HfSafetensors;
    ckpt.path = dir;
    auto config_path = dir / "config.json";
    if (!std::filesystem::exists(config_path))
        fail(dir.string(), ": not a HuggingFace checkpoint directory (no config.json)");
    ckpt.config = read_json_file(config_path);
    if (!ckpt.config.is_object()) fail(config_path.string(), ": not a JSON object");

    auto index_path = dir / "model.safetensors.index.json";
    auto single_path = dir / "model.safetensors";
    if (std::filesystem::exists(index_path)) {
        nlohmann::json index = read_json_file(index_path);
        if (!index.contains("weight_map") || !index["weight_map"].is_object())
            fail(index_path.string(), ": no weight_map object");
        std::map<std::string, std::set<std::string>> by_shard;
        for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
            if (!it.value().is_string()) fail(index_path.string(), ": weight_map entry '", it.key(), "' is not a file name");
            std::string shard = it.value().get<std::string>();
            if (shard.find('/') != std::string::npos) fail(index_path.string(), ": shard name '", shard, "' is not a plain file name");
            by_shard[shard].insert(it.key());
        }
        for (const auto& [shard, names] : by_shard) {
            add_shard(ckpt, dir / shard, &names);
            for (const auto& n : names)
                if (!ckpt.has(n)) fail((dir / shard).string(), ": the index lists tensor '", n, "' here but the shard lacks it");
        }
    } else if (std::filesystem::exists(single_path)) {
        add_shard(ckpt, single_path, nullptr);
    } else {
        bool has_bin = std::filesystem::exists(dir / "pytorch_model.bin") || std::filesystem::exists(dir / "pytorch_model.bin.index.json");
        fail(dir.string(), ": no model.safetensors or model.safetensors.index.json",
             has_bin ? " (only PyTorch .bin weights, which spense does not read: save the model with safe_serialization=True)" : "");
    }

    if (std::filesystem::exists(dir / "tokenizer.json")) ckpt.tokenizer = load_hf_tokenizer(dir / "tokenizer.json");
    return ckpt;
}

}  // namespace spense::detail
