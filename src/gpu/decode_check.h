// Greedy generation with the decode engine, and its check against the CPU forward pass
// (model/transformer.h, float32), the reference every engine number is trusted by.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/matrix.h"
#include "gpu/decode_engine.h"
#include "model/transformer.h"

namespace spense::gpu {

struct Generation {
    std::vector<int32_t> tokens;  // the new tokens
    Matrix prompt_logits;         // [prompt length, vocab]: the engine's logits after each prompt token
    double prefill_seconds = 0, decode_seconds = 0;
};

// Feeds `prompt` to sequence 0 of a batch-1 engine one token per step (the engine has no separate
// prefill), then appends `new_tokens` greedy choices. `on_token` sees each new token as it comes.
// The engine's cache must hold prompt + new_tokens tokens; it starts from empty sequences.
Generation greedy_generate(DecodeEngine& engine, std::span<const int32_t> prompt, int64_t new_tokens, bool keep_prompt_logits,
                           const std::function<void(int32_t)>& on_token = {});

struct CpuComparison {
    int64_t prompt_tokens = 0;
    // The relative error of the logit vector after each prompt token t, ||engine[t] - cpu[t]||_2 /
    // ||cpu[t]||_2, at the worst t; and the stricter elementwise form
    // max_j |engine[t, j] - cpu[t, j]| / max_j |cpu[t, j]|, at its worst t.
    double rel_logit_error = 0, max_logit_error = 0;
    int64_t worst_position = 0;
    std::vector<int32_t> engine_tokens, cpu_tokens;  // greedy continuations
    int64_t matching_tokens = 0;                     // leading new tokens that agree
    // Where they first differ: the CPU logit of its own choice minus that of the engine's (a small
    // margin is a near-tie that quantization may flip).
    double first_difference_margin = 0;

    nlohmann::json json() const;
};

// Runs both on the same prompt: the engine (fresh, batch 1) and the CPU model of the same checkpoint.
CpuComparison compare_with_cpu(DecodeEngine& engine, const Transformer& cpu, std::span<const int32_t> prompt, int64_t new_tokens);

}  // namespace spense::gpu
