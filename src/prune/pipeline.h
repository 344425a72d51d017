// One-shot pruning of every decoder layer's MLP, layer by layer (SPEC.md, "Pipeline"):
// calibration sequences run through layer l with the already-pruned layers 0..l-1; within a
// layer, true-sequential: gate and up are pruned on the MLP input, then down on the intermediate
// activation recomputed through the pruned gate and up. Attention is not pruned.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "io/checkpoint.h"
#include "model/transformer.h"
#include "prune/calibration.h"
#include "prune/dense_select.h"
#include "prune/sparsegpt.h"

namespace spense {

enum class PruneMethod { Magnitude, Wanda, SparseGpt, SpenseGpt, SpenseGptPlus };
PruneMethod parse_prune_method(const std::string& s);  // magnitude | wanda | sparsegpt | spensegpt | spensegpt+
const char* prune_method_name(PruneMethod m);
bool is_spense(PruneMethod m);

enum class IndexScore { Wanda, SparseGpt };
IndexScore parse_index_score(const std::string& s);  // wanda | sparsegpt
const char* index_score_name(IndexScore s);

struct PruneOptions {
    PruneMethod method = PruneMethod::SpenseGptPlus;
    PruneSpec::Pattern pattern = PruneSpec::Pattern::TwoFour;  // unstructured: baselines only
    double sparsity = 0.5;                                     // MLP sparsity
    int64_t align = 128;                                       // the dense count's multiple
    IndexScore score = IndexScore::Wanda;                      // SpenseGPT+ only
    DenseLayout layout = DenseLayout::Back;                    // SpenseGPT+ only
    SparseGptOptions sparsegpt;
    // Weights are rounded to this type as they are pruned, so that the model the calibration runs
    // through, and the one written, are the same.
    DType weight_dtype = DType::F32;

    // Checks the options against each other and the model; returns the dense count k.
    int64_t validate(const ModelConfig& cfg) const;
    nlohmann::json to_json() const;
};

struct LinearReport {
    double masked_error = 0;  // relative reconstruction error of the mask alone (no weight update)
    double error = 0;         // relative reconstruction error of the final weight
    double sparsity = 0;      // fraction of zeros in the whole weight
};

struct LayerReport {
    int64_t layer = 0;
    int64_t dense = 0;  // k: the last k intermediate indices are dense
    LinearReport gate, up, down;
    double mlp_error = 0;  // ||mlp'(h) - mlp(h)||^2 / ||mlp(h)||^2 over the calibration tokens
    double seconds = 0;
    std::vector<int64_t> source_index;  // the source model's intermediate index at each runtime position
    nlohmann::json to_json() const;  // without source_index
    static LayerReport from_json(const nlohmann::json& j);
};

struct PruneReport {
    std::vector<LayerReport> layers;
    double seconds = 0;       // of this run (a resumed run counts from its restart)
    int64_t resumed_at = 0;   // layers restored from the state instead of pruned
    nlohmann::json backend;  // PruneBackend::describe() at the end
};

class PruneBackend;  // backend.h
class PruneState;    // resume.h

// Prunes `model`'s MLPs in place (they end in the runtime layout: dense region last), the heavy
// arithmetic done by `backend` (whose model must be `model`). With a `state`, each layer is
// committed to it as it is done, and the layers it already holds are restored instead of pruned.
// Shows progress per layer (layer i of n, elapsed, ETA).
PruneReport prune_model(Transformer& model, const CalibrationSet& calib, const PruneOptions& opt, PruneBackend& backend,
                        PruneState* state);
// The same on the CPU, without state.
PruneReport prune_model(Transformer& model, const CalibrationSet& calib, const PruneOptions& opt);
// The same with the MLPs streamed, for models whose MLPs do not fit in memory together: `model`
// is loaded without them (MlpWeights::Skip); layer l's MLP is loaded from `source` (and rounded to
// opt.weight_dtype) when the pipeline reaches it, committed to `state`, and released, so that one
// layer's MLP at a time is in memory and the pruned model ends in `state` (PruneState::read_weight),
// its MLPs null in `model`. The layers `state` already holds are read back one at a time for
// their forward. The result is the same, bit for bit, as pruning the whole model in memory.
PruneReport prune_model(Transformer& model, const Checkpoint& source, const CalibrationSet& calib, const PruneOptions& opt,
                        PruneBackend& backend, PruneState& state);

// Rounds every weight of the model (its MLPs where loaded) to `dtype` (exact for F32).
void round_weights(ModelWeights& w, DType dtype);

}  // namespace spense
