// Calibration sequences: `nsamples` windows of `seqlen` tokens at uniformly random starts in the
// token stream of a text range (SparseGPT's recipe for C4), reproducible from the seed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/text.h"
#include "io/tokenizer.h"

namespace spense {

struct CalibrationOptions {
    std::filesystem::path file;
    TextRange range;
    int64_t nsamples = 128;
    int64_t seqlen = 2048;
    uint64_t seed = 0;
};

struct CalibrationSet {
    std::vector<std::vector<int32_t>> samples;
    int64_t stream_tokens = 0;  // tokens in the range the windows were drawn from
    // FNV-1a (64-bit) over the sampled token ids, in order: two runs pruned from the same tokens
    // have the same fingerprint (a tokenizer setting that differs between machines shows here).
    uint64_t fingerprint() const;

    nlohmann::json describe(const CalibrationOptions& opt) const;
};

// Throws when the range holds fewer than seqlen tokens.
CalibrationSet sample_calibration(const Tokenizer& tok, const CalibrationOptions& opt);

}  // namespace spense
