#include "format/spense.h"

#include <cmath>
#include <random>

#include "core/error.h"

namespace spense {

bool is_2to4(const Matrix& w, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    SPENSE_CHECK((c1 - c0) % 4 == 0, "is_2to4: column range [", c0, ", ", c1, ") is not a whole number of groups of 4");
    for (int64_t r = r0; r < r1; ++r) {
        const float* row = w.row(r);
        for (int64_t c = c0; c < c1; c += 4) {
            int nz = (row[c] != 0) + (row[c + 1] != 0) + (row[c + 2] != 0) + (row[c + 3] != 0);
            if (nz > 2) return false;
        }
    }
    return true;
}

std::string check_spense_mlp(const SpenseMlpWeights& m) {
    const int64_t d = m.hidden(), f = m.d_ff(), s = m.sparse();
    if (m.up.rows != f || m.up.cols != d || m.down.rows != d || m.down.cols != f)
        return cat("inconsistent shapes: gate [", f, ", ", d, "], up [", m.up.rows, ", ", m.up.cols, "], down [", m.down.rows,
                   ", ", m.down.cols, "]");
    if (m.dense < 0 || m.dense > f) return cat("dense count ", m.dense, " outside [0, ", f, "]");
    if (s > 0 && d % 4 != 0) return cat("hidden size ", d, " is not a multiple of 4, so gate/up rows cannot be 2:4");
    if (s % 4 != 0) return cat("sparse region of ", s, " indices is not a multiple of 4, so down columns cannot be 2:4");
    if (!is_2to4(m.gate, 0, s, 0, d)) return "gate: a sparse row has more than 2 non-zeros in a group of 4";
    if (!is_2to4(m.up, 0, s, 0, d)) return "up: a sparse row has more than 2 non-zeros in a group of 4";
    if (!is_2to4(m.down, 0, d, 0, s)) return "down: a row has more than 2 non-zeros in a group of 4 sparse columns";
    return {};
}

namespace {

Matrix random_matrix(int64_t rows, int64_t cols, std::mt19937_64& rng) {
    const float a = float(1.0 / std::sqrt(double(cols)));
    std::uniform_real_distribution<float> mag(a / 16, a);
    std::bernoulli_distribution sign(0.5);
    Matrix m(rows, cols);
    for (float& v : m.data) v = sign(rng) ? mag(rng) : -mag(rng);
    return m;
}

// Zeroes 2 random positions of every group of 4 in rows [0, rows) x columns [0, cols).
void prune_2to4_randomly(Matrix& w, int64_t rows, int64_t cols, std::mt19937_64& rng) {
    static const int kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
    std::uniform_int_distribution<int> pick(0, 5);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; c += 4) {
            const int* drop = kPairs[pick(rng)];
            w(r, c + drop[0]) = 0.0f;
            w(r, c + drop[1]) = 0.0f;
        }
}

}  // namespace

SpenseMlpWeights random_spense_mlp(int64_t hidden, int64_t d_ff, int64_t dense, uint64_t seed) {
    SPENSE_CHECK(dense >= 0 && dense <= d_ff && (d_ff - dense) % 4 == 0 && (dense == d_ff || hidden % 4 == 0),
                 "random_spense_mlp: hidden ", hidden, ", d_ff ", d_ff, ", dense ", dense, " do not form a Spense MLP");
    std::mt19937_64 rng(seed);
    SpenseMlpWeights m;
    m.dense = dense;
    m.gate = random_matrix(d_ff, hidden, rng);
    m.up = random_matrix(d_ff, hidden, rng);
    m.down = random_matrix(hidden, d_ff, rng);
    const int64_t s = d_ff - dense;
    prune_2to4_randomly(m.gate, s, hidden, rng);
    prune_2to4_randomly(m.up, s, hidden, rng);
    prune_2to4_randomly(m.down, hidden, s, rng);
    return m;
}

}  // namespace spense
