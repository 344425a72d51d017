// Resumable pruning. After each decoder layer the pipeline commits, atomically, that layer's
// pruned MLP and the reports so far to a state directory (the CLI's is OUT.partial, beside the
// output). The activations entering the next layer are not stored: on resume they are recomputed
// by running the calibration through the saved layers with the same backend calls that produced
// them in the uninterrupted run (attention, then PruneBackend::mlp_forward, which adds exactly
// what apply_mlp added), so that a resumed run writes the same checkpoint bit for bit.
//
//   DIR/state.json     {"version": 1, "fingerprint": F, "weight_dtype": T, "layers": [report...]}
//                      written last: the commit point of a layer
//   DIR/layer-L.bin    layer L's gate [d_ff, hidden], up [d_ff, hidden], down [hidden, d_ff] in
//                      the runtime layout, row-major, as T (the weights are already rounded to T)
//
// A kill between the two writes leaves a layer file that state.json does not count; it is
// rewritten when the layer is pruned again. When the pipeline streams the MLPs (pipeline.h), the
// layer files are the only copy of the pruned MLPs, and the written checkpoint's come from them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/transformer.h"
#include "prune/pipeline.h"

namespace spense {

class PruneState {
public:
    // Opens `dir`, creating it when absent. An existing state is continued only with `resume`
    // and only when its fingerprint (whatever identifies the run: model, options, calibration,
    // device) equals `fingerprint`; otherwise throws saying what to do. `resume` without a
    // state is an error too.
    PruneState(std::filesystem::path dir, std::string fingerprint, DType weight_dtype, bool resume);

    const std::filesystem::path& dir() const { return dir_; }
    int64_t layers_done() const { return int64_t(reports_.size()); }
    const std::vector<LayerReport>& reports() const { return reports_; }

    // The saved MLP of layer l < layers_done().
    DenseMlp load_layer(int64_t l, const ModelConfig& cfg) const;
    // Copies the saved bytes of one weight of layer l < layers_done() (as stored: T, the runtime
    // layout) into `bytes`, which must be exactly its size: for writing the output without
    // decoding the layer.
    void read_weight(int64_t l, MlpProj proj, std::span<uint8_t> bytes) const;
    // Saves layer `report.layer` == layers_done() and commits it.
    void commit_layer(const LayerReport& report, const DenseMlp& mlp);
    // Deletes the directory (once the output is written).
    void remove();

private:
    void write_state() const;

    std::filesystem::path dir_;
    std::string fingerprint_;
    DType dtype_;
    std::vector<LayerReport> reports_;
};

}  // namespace spense
