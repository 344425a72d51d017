// spense bench decode: the decode engine (decode_engine.h) on a random-weight model built from a
// config (e.g. Qwen3-32B's, whose weights we do not need to time it), dense against Spense MLPs.
//
// For every MLP sparsity (0: dense; s > 0: Spense with dense ratio rho = 1 - 2s, so 50% is plain
// 2:4) one engine is built; for every context length c each sequence of the batch has c tokens in
// its KV cache (their values are whatever the cache holds: the attention reads all of them the
// same) and appends one. Protocol: two untimed steps (the first eager, searching the GEMMs'
// algorithms; the second captures the CUDA graph), then each timed step is one graph replay
// between CUDA events, with the lengths reset between steps; the median of the repetitions is
// reported with min and max. The floor of a step is the bytes it must stream (every weight and
// scale once, the KV cache of the batch) over the read bandwidth measured in the same run. Each
// part of a step (its GEMMs, its attention, its elementwise kernels) is also timed alone, as a
// graph of its own, to show where the time goes.
#pragma once

#include <cstdint>
#include <ostream>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu/gemm_dtype.h"
#include "model/config.h"

namespace spense::gpu {

struct DecodeBenchOptions {
    ModelConfig config;
    std::string config_name;
    std::vector<int64_t> contexts;
    std::vector<double> sparsities;  // MLP sparsities in [0, 0.5]
    int64_t batch = 32;
    int64_t align = 128;  // the dense count is a multiple of it
    GemmDType dtype = GemmDType::FP8;
    int64_t steps = 30;   // timed steps per (sparsity, context)
    uint64_t seed = 1;
};

// Runs the sweep; progress on stderr, markdown tables on `out`; returns the JSON report (run, GPU
// and library versions, bandwidths, every measurement).
nlohmann::json run_decode_bench(const DecodeBenchOptions& opt, std::ostream& out);

}  // namespace spense::gpu
