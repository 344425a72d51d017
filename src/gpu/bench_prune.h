// spense bench prune: the time per decoder layer of each stage of GPU pruning (forward,
// Hessians, index selection, SparseGPT, errors) on a random-weight model of a given shape (by
// default Qwen3-32B's: hidden 5120, d_ff 25600, 64 heads, 8 KV heads, head dim 128, q/k norms),
// through the same pipeline `spense prune --device cuda` runs, extrapolated to a whole model.
#pragma once

#include <cstdint>
#include <ostream>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu/gpu_pruner.h"
#include "prune/pipeline.h"

namespace spense::gpu {

struct PruneBenchOptions {
    int64_t hidden = 5120, d_ff = 25600, heads = 64, kv_heads = 8, head_dim = 128;
    int64_t layers = 1;         // decoder layers pruned (timings are per layer)
    int64_t model_layers = 64;  // the whole model's, for the extrapolation
    std::vector<int64_t> seqlens = {2048};
    int64_t nsamples = 128;
    // Token-proportional stages (forward, Hessians) are scaled from nsamples to target_samples.
    int64_t target_samples = 128;
    PruneOptions prune;
    GpuPruneOptions gpu;
    uint64_t seed = 1;
};

// Runs every sequence length, prints a markdown table per length on `out`, returns the report.
nlohmann::json run_prune_bench(const PruneBenchOptions& opt, std::ostream& out);

}  // namespace spense::gpu
