// spense bench attention: the flash-decoding attention kernel (decode_attention.h) alone, at decode
// shapes (by default Qwen3-32B's layer: batch 32, 64 heads over 8 KV heads of 128, context 4096).
//
// For every chunk size (0 = the automatic choice), cache length (all sequences equal) and output
// type (BF16, FP8 with row scales) it times one run() (the whole kernel: q/k norms, RoPE, the
// cache append and attention) on random BF16 values. Protocol: three untimed runs, then each repetition evicts L2 by reading a buffer of twice
// its size and CUDA events time the run alone; the median of the repetitions is reported with min
// and max. Bandwidth counts the K and V bytes the kernel must read (batch x KV heads x keys x head
// dim x 2 bytes x 2, keys = min(length, window)) over the median, beside the streaming-read
// bandwidth measured in the same run (bandwidth.h). What the timing leaves out: the host's launch
// overhead (the engine replays a CUDA graph), and the small traffic of the q|k|v rows, the partials and the output.
#pragma once

#include <cstdint>
#include <ostream>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu/decode_attention.h"

namespace spense::gpu {

struct AttentionBenchOptions {
    DecodeAttentionShape shape{32, 64, 8, 128, 4096};
    std::vector<int64_t> lengths = {1, 1024, 4096};
    std::vector<int64_t> chunks = {0};  // positions per block; 0 = automatic
    int reps = 50;
    uint64_t seed = 1;
};

// Prints a markdown table on `out`; returns the report (run and GPU description, read bandwidth,
// every measurement).
nlohmann::json run_attention_bench(const AttentionBenchOptions& opt, std::ostream& out);

}  // namespace spense::gpu
