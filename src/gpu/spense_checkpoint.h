// Reading one MLP of a pruned checkpoint, as `spense prune` writes it (an HF directory whose
// spense.json gives, per layer, the dense count k and the dense region [d_ff - k, d_ff)), into the
// runtime layout that GpuSpenseMlp::upload takes.
#pragma once

#include <cstdint>

#include "format/spense.h"
#include "io/checkpoint.h"

namespace spense::gpu {

// Throws spense::Error naming the checkpoint and layer when spense.json is missing or does not
// describe the layer, or when the weights are not a valid Spense MLP (check_spense_mlp).
SpenseMlpWeights load_spense_mlp(const Checkpoint& ckpt, int64_t layer);

}  // namespace spense::gpu
