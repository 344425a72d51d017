// Reading one MLP of a pruned checkpoint, as `spense prune` writes it (an HF directory whose
// spense.json gives, per layer, the dense count k and the dense region [d_ff - k, d_ff)), into the
// runtime layout that GpuSpenseMlp::upload takes.
#pragma once

#include <cstdint>
#include <vector>

#include "format/spense.h"
#include "io/checkpoint.h"

namespace spense::gpu {

// The dense count k of every layer, from spense.json (read once). Throws spense::Error naming the
// file when it is missing, not JSON, does not describe every layer, or puts a dense region
// anywhere but the last k intermediate indices (the runtime layout).
std::vector<int64_t> spense_dense_counts(const Checkpoint& ckpt);

// One layer's MLP with its dense count. Throws as above, or when the weights are not a valid
// Spense MLP (check_spense_mlp), naming the checkpoint and layer.
SpenseMlpWeights load_spense_mlp(const Checkpoint& ckpt, int64_t layer);

}  // namespace spense::gpu
