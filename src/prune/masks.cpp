#include "prune/masks.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace spense {

void prune_2to4_by_score(Matrix& w, const std::vector<double>& col_scale) {
    SPENSE_CHECK(w.cols % 4 == 0 && int64_t(col_scale.size()) == w.cols, "2:4 pruning needs a multiple of 4 columns (got ",
                 w.cols, ") and one scale per column");
#pragma omp parallel for
    for (int64_t r = 0; r < w.rows; ++r) {
        float* row = w.row(r);
        for (int64_t c = 0; c < w.cols; c += 4) {
            double s[4];
            int order[4] = {0, 1, 2, 3};
            for (int k = 0; k < 4; ++k) s[k] = std::fabs(double(row[c + k])) * col_scale[size_t(c + k)];
            std::stable_sort(order, order + 4, [&](int a, int b) { return s[a] < s[b]; });
            row[c + order[0]] = 0.0f;
            row[c + order[1]] = 0.0f;
        }
    }
}

void prune_unstructured_by_score(Matrix& w, const std::vector<double>& col_scale, double sparsity, bool per_row) {
    SPENSE_CHECK(sparsity > 0 && sparsity < 1 && int64_t(col_scale.size()) == w.cols, "unstructured pruning: sparsity ",
                 sparsity, " outside (0, 1) or scales do not match ", w.cols, " columns");
    auto prune_range = [&](int64_t r0, int64_t r1) {
        const int64_t n = (r1 - r0) * w.cols;
        std::vector<std::pair<double, int64_t>> s(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
            int64_t r = r0 + i / w.cols, c = i % w.cols;
            s[size_t(i)] = {std::fabs(double(w(r, c))) * col_scale[size_t(c)], r * w.cols + c};
        }
        const int64_t k = std::llround(double(n) * sparsity);
        if (k == 0) return;
        std::nth_element(s.begin(), s.begin() + (k - 1), s.end());
        for (int64_t i = 0; i < k; ++i) w.data[size_t(s[size_t(i)].second)] = 0.0f;
    };
    if (!per_row) {
        prune_range(0, w.rows);
        return;
    }
#pragma omp parallel for
    for (int64_t r = 0; r < w.rows; ++r) prune_range(r, r + 1);
}

}  // namespace spense
