// Random calibration sets for the pruning tests: n sequences of len token ids uniform in
// [0, vocab), reproducible from the seed.
#pragma once

#include <cstdint>
#include <random>

#include "prune/calibration.h"

namespace spense::test {

inline CalibrationSet random_calibration(int64_t vocab, int64_t n, int64_t len, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1));
    CalibrationSet c;
    for (int64_t s = 0; s < n; ++s) {
        c.samples.emplace_back(size_t(len));
        for (auto& t : c.samples.back()) t = tok(rng);
    }
    c.stream_tokens = n * len;
    return c;
}

}  // namespace spense::test
