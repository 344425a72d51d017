// spense inspect: what a checkpoint holds.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/run_info.h"
#include "io/checkpoint.h"
#include "format/spense.h"
#include "model/config.h"
#include "model/transformer.h"

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

double zero_fraction(const Matrix& m, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    if (r1 <= r0 || c1 <= c0) return 0.0;
    int64_t zeros = 0;
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) zeros += m(r, c) == 0.0f;
    return double(zeros) / double((r1 - r0) * (c1 - c0));
}

// Checks a pruned checkpoint against its spense.json: every sparse region exactly 2:4, the dense
// regions where spense.json puts them (and not pruned). Prints sparsity per layer; returns the
// number of violations.
int verify_spense(const Checkpoint& ckpt, const ModelConfig& cfg, nlohmann::json& report) {
    std::ifstream in(ckpt.path / "spense.json");
    nlohmann::json sj;
    try {
        sj = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail((ckpt.path / "spense.json").string(), ": not valid JSON (", e.what(), ")");
    }
    const bool two_four = sj.at("options").at("pattern") == "2:4";
    const int64_t f = cfg.intermediate, d = cfg.hidden;
    if (!sj.contains("layers") || int64_t(sj["layers"].size()) != cfg.n_layers)
        fail((ckpt.path / "spense.json").string(), ": describes ", sj.value("layers", nlohmann::json::array()).size(), " layers, the model has ",
             cfg.n_layers);
    std::printf("\nspense.json: %s, pattern %s, MLP sparsity %.4f\n", sj["options"]["method"].get<std::string>().c_str(),
                two_four ? "2:4" : "unstructured", sj.value("mlp_sparsity", 0.0));
    std::printf("| layer | dense region | 2:4 valid | gate sparsity | up sparsity | down sparsity | dense region zeros |\n|---|---|---|---|---|---|---|\n");
    int violations = 0;
    int64_t zeros = 0, total = 0;
    report["layers"] = nlohmann::json::array();
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const auto& lj = sj["layers"][size_t(l)];
        const int64_t k = lj.at("dense").get<int64_t>();
        const auto region = lj.at("dense_region");
        SpenseMlpWeights m;
        auto mlp = load_dense_mlp(ckpt, cfg, l);
        m.gate = std::move(mlp->gate);
        m.up = std::move(mlp->up);
        m.down = std::move(mlp->down);
        m.dense = k;
        std::string problem;
        if (region[0].get<int64_t>() != f - k || region[1].get<int64_t>() != f)
            problem = cat("dense region ", region.dump(), " is not the last ", k, " indices");
        else if (two_four)
            problem = check_spense_mlp(m);
        // A dense region keeps every weight; only inputs that were dead in calibration can be zero.
        const double dense_zeros = k == 0 ? 0.0
                                          : (zero_fraction(m.gate, f - k, f, 0, d) + zero_fraction(m.up, f - k, f, 0, d) +
                                             zero_fraction(m.down, 0, d, f - k, f)) / 3.0;
        if (problem.empty() && dense_zeros > 0.01) problem = cat("dense region has ", dense_zeros * 100, "% zeros");
        if (!problem.empty()) {
            ++violations;
            std::fprintf(stderr, "spense inspect: layer %lld: %s\n", (long long)l, problem.c_str());
        }
        const double sg = zero_fraction(m.gate, 0, f, 0, d), su = zero_fraction(m.up, 0, f, 0, d), sd = zero_fraction(m.down, 0, d, 0, f);
        zeros += int64_t((sg + su + sd) * double(f * d));
        total += 3 * f * d;
        std::printf("| %lld | [%lld, %lld) | %s | %.4f | %.4f | %.4f | %.4f |\n", (long long)l, (long long)(f - k), (long long)f,
                    !two_four ? "n/a" : problem.empty() ? "yes" : "NO", sg, su, sd, dense_zeros);
        report["layers"].push_back({{"layer", l}, {"dense", k}, {"valid", problem.empty()}, {"problem", problem},
                                    {"gate_sparsity", sg}, {"up_sparsity", su}, {"down_sparsity", sd}, {"dense_region_zeros", dense_zeros}});
    }
    report["mlp_sparsity"] = double(zeros) / double(total);
    report["violations"] = violations;
    std::printf("MLP sparsity %.4f; %s\n", double(zeros) / double(total),
                violations == 0 ? "every layer matches spense.json" : cat(violations, " layer(s) violate spense.json").c_str());
    return violations;
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
    if (args.positional().empty()) fail("give the checkpoint to inspect: spense inspect PATH");
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

    nlohmann::json spense_report;
    int violations = 0;
    if (ckpt.format == CheckpointFormat::HfSafetensors && std::filesystem::exists(ckpt.path / "spense.json"))
        violations = verify_spense(ckpt, cfg, spense_report);

    if (auto json_path = args.get("json")) {
        nlohmann::json tensors = nlohmann::json::object();
        for (const auto& [name, t] : ckpt.tensors) tensors[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}};
        nlohmann::json j = {{"command", "inspect"}, {"checkpoint", path},  {"format", format_name(ckpt.format)},
                            {"config", ckpt.config}, {"parameters", total}, {"parameters_by_group", params_by_group},
                            {"bytes", bytes},        {"tensors", tensors},  {"run", run_info()}};
        if (!spense_report.is_null()) j["spense"] = spense_report;
        write_file_atomic(*json_path, j.dump(2) + "\n");
    }
    if (violations > 0) fail(path, ": ", violations, " layer(s) do not match spense.json (see above)");
    return 0;
}

}  // namespace spense::cli
