// spense inspect: what a checkpoint holds.
#include <cstdio>
#include <iostream>
#include <map>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/run_info.h"
#include "io/checkpoint.h"
#include "model/config.h"

namespace spense::cli {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
    std::string r;
    for (size_t i = 0; i < s.size(); ++i) r += (i ? " x " : "") + std::to_string(s[i]);
    return r;
}

// Which part of the model a tensor belongs to, for the parameter breakdown.
const char* tensor_group(const std::string& name) {
    if (name.find("embed_tokens") != std::string::npos) return "embedding";
    if (name.find("lm_head") != std::string::npos) return "lm_head";
    if (name.find(".mlp.") != std::string::npos) return "mlp";
    if (name.find(".self_attn.") != std::string::npos && name.find("norm") == std::string::npos) return "attention";
    return "norms";
}

bool in_layer_zero_or_global(const std::string& name) {
    return name.rfind("model.layers.", 0) != 0 || name.rfind("model.layers.0.", 0) == 0;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
    Args args("inspect", "Architecture, shapes, dtypes and parameter counts of a checkpoint.\nusage: spense inspect PATH [options]",
              {{"all", "", "list every tensor (default: the global ones and layer 0)", ""},
               {"json", "FILE", "also write the report as JSON to FILE", ""}},
              argc, argv, 1);
    if (args.help_requested()) {
        std::cout << args.usage();
        return 0;
    }
    if (args.positional().empty()) fail("inspect: give the checkpoint path (spense inspect PATH)");
    const std::string path = args.positional()[0];
    Checkpoint ckpt = open_checkpoint(path);
    ModelConfig cfg = ModelConfig::from_hf(ckpt.config, path);

    std::map<std::string, int64_t> params_by_group;
    std::map<std::string, std::pair<int64_t, size_t>> by_dtype;  // tensors, bytes
    int64_t total = 0;
    size_t bytes = 0;
    for (const auto& [name, t] : ckpt.tensors) {
        params_by_group[tensor_group(name)] += t.numel();
        auto& d = by_dtype[std::string(dtype_name(t.dtype))];
        d.first += 1;
        d.second += t.nbytes;
        total += t.numel();
        bytes += t.nbytes;
    }

    std::printf("checkpoint     %s (%s)\n", path.c_str(), format_name(ckpt.format));
    std::printf("architecture   %s\n", cfg.architecture.c_str());
    std::printf("layers         %lld\n", (long long)cfg.n_layers);
    std::printf("hidden         %lld\n", (long long)cfg.hidden);
    std::printf("intermediate   %lld (d_ff)\n", (long long)cfg.intermediate);
    std::printf("attention      %lld heads, %lld KV heads, head_dim %lld%s%s%s\n", (long long)cfg.n_heads,
                (long long)cfg.n_kv_heads, (long long)cfg.head_dim, cfg.qkv_bias ? ", q/k/v bias" : "",
                cfg.qk_norm ? ", q/k norm" : "", cfg.sliding_window ? ", sliding window" : "");
    std::printf("rope           theta %g%s\n", cfg.rope_theta,
                cfg.rope_scaling.type == RopeScaling::Type::None ? "" : cfg.rope_scaling.type == RopeScaling::Type::Linear ? ", linear scaling" : ", llama3 scaling");
    std::printf("vocab          %lld (%s embeddings)\n", (long long)cfg.vocab, cfg.tie_embeddings ? "tied" : "untied");
    std::printf("context        %lld\n", (long long)cfg.max_positions);
    std::printf("tokenizer      %s\n", ckpt.tokenizer ? "yes" : "none found");
    std::printf("parameters     %.3f M", double(total) / 1e6);
    for (const auto& [g, n] : params_by_group) std::printf(", %s %.3f M", g.c_str(), double(n) / 1e6);
    std::printf("\nstorage        %.2f MB:", double(bytes) / 1e6);
    for (const auto& [d, v] : by_dtype) std::printf(" %s %lld tensors %.2f MB;", d.c_str(), (long long)v.first, double(v.second) / 1e6);
    std::printf("\n\n| tensor | dtype | shape |\n|---|---|---|\n");
    bool all = args.flag("all");
    for (const auto& [name, t] : ckpt.tensors)
        if (all || in_layer_zero_or_global(name))
            std::printf("| %s | %s | %s |\n", name.c_str(), std::string(dtype_name(t.dtype)).c_str(), shape_str(t.shape).c_str());
    if (!all && cfg.n_layers > 1) std::printf("(layers 1..%lld alike; --all lists every tensor)\n", (long long)cfg.n_layers - 1);

    if (auto json_path = args.get("json")) {
        nlohmann::json tensors = nlohmann::json::object();
        for (const auto& [name, t] : ckpt.tensors) tensors[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}};
        nlohmann::json j = {{"command", "inspect"}, {"checkpoint", path},  {"format", format_name(ckpt.format)},
                            {"config", ckpt.config}, {"parameters", total}, {"parameters_by_group", params_by_group},
                            {"bytes", bytes},        {"tensors", tensors},  {"run", run_info()}};
        write_file_atomic(*json_path, j.dump(2) + "\n");
    }
    return 0;
}

}  // namespace spense::cli
