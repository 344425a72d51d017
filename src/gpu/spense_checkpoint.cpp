#include "gpu/spense_checkpoint.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/config.h"
#include "model/transformer.h"

namespace spense::gpu {

std::vector<int64_t> spense_dense_counts(const Checkpoint& ckpt) {
    const auto path = ckpt.path / "spense.json";
    std::ifstream in(path);
    if (!in) fail(path.string(), ": missing; a Spense MLP needs the spense.json that spense prune writes beside the weights");
    nlohmann::json sj;
    try {
        sj = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail(path.string(), ": not valid JSON (", e.what(), ")");
    }
    const ModelConfig cfg = ModelConfig::from_hf(ckpt.config, ckpt.path.string());
    if (!sj.contains("layers") || int64_t(sj["layers"].size()) != cfg.n_layers)
        fail(path.string(), ": describes ", sj.value("layers", nlohmann::json::array()).size(), " layers, the model has ", cfg.n_layers);
    std::vector<int64_t> counts;
    const int64_t f = cfg.intermediate;
    for (int64_t layer = 0; layer < cfg.n_layers; ++layer) {
        const auto& lj = sj["layers"][size_t(layer)];
        const int64_t k = lj.at("dense").get<int64_t>();
        if (lj.contains("dense_region") && (lj["dense_region"][0].get<int64_t>() != f - k || lj["dense_region"][1].get<int64_t>() != f))
            fail(path.string(), ": layer ", layer, "'s dense region ", lj["dense_region"].dump(), " is not the last ", k,
                 " intermediate indices (the runtime layout)");
        counts.push_back(k);
    }
    return counts;
}

SpenseMlpWeights load_spense_mlp(const Checkpoint& ckpt, int64_t layer) {
    const std::vector<int64_t> counts = spense_dense_counts(ckpt);
    const ModelConfig cfg = ModelConfig::from_hf(ckpt.config, ckpt.path.string());
    if (layer < 0 || layer >= cfg.n_layers) fail(ckpt.path.string(), ": layer ", layer, " outside [0, ", cfg.n_layers, ")");
    auto mlp = load_dense_mlp(ckpt, cfg, layer);
    SpenseMlpWeights w;
    w.gate = std::move(mlp->gate);
    w.up = std::move(mlp->up);
    w.down = std::move(mlp->down);
    w.dense = counts[size_t(layer)];
    if (std::string problem = check_spense_mlp(w); !problem.empty()) fail(ckpt.path.string(), ": layer ", layer, ": ", problem);
    return w;
}

}  // namespace spense::gpu
