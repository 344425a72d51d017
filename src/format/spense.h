// The Spense MLP layout (SPEC.md, "The Spense format").
//
// After permutation, intermediate indices [0, d_ff - k) are sparse and [d_ff - k, d_ff) dense:
//   gate, up [d_ff, d]:  rows [0, d_ff-k) are 2:4 along d (each row, each group of 4 columns
//                        {4g..4g+3} holds at most 2 non-zeros); rows [d_ff-k, d_ff) are dense.
//   down [d, d_ff]:      columns [0, d_ff-k) are 2:4 along d_ff (each row, each group of 4
//                        columns inside the sparse region); columns [d_ff-k, d_ff) are dense.
// k = 0 is plain 2:4; k = d_ff is a dense MLP.
#pragma once

#include <cstdint>
#include <string>

#include "core/matrix.h"

namespace spense {

struct SpenseMlpWeights {
    Matrix gate, up, down;  // [d_ff, d], [d_ff, d], [d, d_ff], runtime layout
    int64_t dense = 0;      // k: the dense intermediate indices are the last k

    int64_t d_ff() const { return gate.rows; }
    int64_t hidden() const { return gate.cols; }
    int64_t sparse() const { return d_ff() - dense; }
};

// Whether rows [r0, r1) x columns [c0, c1) of `w` are 2:4 along the columns, groups starting at c0.
// (c1 - c0) must be a multiple of 4.
bool is_2to4(const Matrix& w, int64_t r0, int64_t r1, int64_t c0, int64_t c1);

// Empty when `m` is a valid Spense MLP; otherwise what is wrong (which weight, which group).
std::string check_spense_mlp(const SpenseMlpWeights& m);

// Random Spense MLP weights for tests and benchmarks: entries ~ U(-a, a) with |entries| >= a/16
// (no accidental zeros, so a wrong mask cannot hide), the sparse regions pruned to exactly 2 of 4
// at random positions. a = 1/sqrt(fan_in).
SpenseMlpWeights random_spense_mlp(int64_t hidden, int64_t d_ff, int64_t dense, uint64_t seed);

}  // namespace spense
