#include "prune/sparsegpt.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <cblas.h>

#include "core/error.h"
#include "core/linalg.h"

namespace spense {

PruneSpec PruneSpec::two_four(int64_t cols, int64_t first, int64_t last) {
    SPENSE_CHECK(0 <= first && first <= last && last <= cols && (last - first) % 4 == 0, "2:4 region [", first, ", ", last,
                 ") of ", cols, " columns is not a whole number of groups of 4");
    PruneSpec s;
    s.pattern = Pattern::TwoFour;
    s.dense_column.assign(size_t(cols), 1);
    for (int64_t c = first; c < last; c += 4) {
        s.groups.push_back({c, c + 1, c + 2, c + 3});
        std::fill_n(s.dense_column.begin() + c, 4, 0);
    }
    return s;
}

PruneSpec PruneSpec::unstructured(int64_t cols, double sparsity) {
    SPENSE_CHECK(sparsity > 0 && sparsity < 1, "unstructured sparsity ", sparsity, " outside (0, 1)");
    PruneSpec s;
    s.pattern = Pattern::Unstructured;
    s.sparsity = sparsity;
    s.dense_column.assign(size_t(cols), 0);
    return s;
}

void sparsegpt_prune(Matrix& w, std::vector<double> h, const PruneSpec& spec, const SparseGptOptions& opt,
                     const std::string& what) {
    const int64_t rows = w.rows, cols = w.cols, B = opt.blocksize;
    SPENSE_CHECK(int64_t(h.size()) == cols * cols, what, ": Hessian of ", h.size(), " values for ", cols, " columns");
    SPENSE_CHECK(int64_t(spec.dense_column.size()) == cols, what, ": prune spec covers ", spec.dense_column.size(), " of ",
                 cols, " columns");
    SPENSE_CHECK(B > 0, "blocksize must be positive");

    for (int64_t j = 0; j < cols; ++j)
        if (h[size_t(j * cols + j)] == 0.0) {
            h[size_t(j * cols + j)] = 1.0;
            for (int64_t r = 0; r < rows; ++r) w(r, j) = 0.0f;
        }
    double mean_diag = 0;
    for (int64_t j = 0; j < cols; ++j) mean_diag += h[size_t(j * cols + j)];
    const double damp = opt.percdamp * mean_diag / double(cols);
    for (int64_t j = 0; j < cols; ++j) h[size_t(j * cols + j)] += damp;
    spd_inverse(h, cols, what + " Hessian");
    cholesky_upper(h, cols, what + " inverse Hessian");
    const Matrix u(cols, cols, std::vector<float>(h.begin(), h.end()));

    // group_starting_at[c]: the group whose first column is c, or -1.
    std::vector<int64_t> group_starting_at(size_t(cols), -1);
    for (size_t g = 0; g < spec.groups.size(); ++g) {
        const auto& grp = spec.groups[g];
        for (int64_t c : grp)
            SPENSE_CHECK(c >= 0 && c < cols && !spec.dense_column[size_t(c)], what, ": 2:4 group column ", c, " is dense or outside");
        group_starting_at[size_t(grp[0])] = int64_t(g);
    }

    std::vector<uint8_t> pruned(size_t(rows * cols), 0);
    Matrix w1, err1;
    std::vector<float> scores;
    for (int64_t i1 = 0; i1 < cols; i1 += B) {
        const int64_t i2 = std::min(cols, i1 + B), count = i2 - i1;
        w1 = Matrix(rows, count);
        for (int64_t r = 0; r < rows; ++r) std::copy_n(w.row(r) + i1, count, w1.row(r));
        err1 = Matrix(rows, count);

        if (spec.pattern == PruneSpec::Pattern::Unstructured) {
            // The block's `sparsity` fraction of prunable weights with the smallest w^2 / U_jj^2.
            std::vector<std::pair<float, int64_t>> cand;
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t j = 0; j < count; ++j)
                    if (!spec.dense_column[size_t(i1 + j)]) {
                        float d = u(i1 + j, i1 + j), v = w1(r, j);
                        cand.emplace_back(v * v / (d * d), r * cols + i1 + j);
                    }
            const size_t n_prune = size_t(std::llround(double(cand.size()) * spec.sparsity));
            if (n_prune > 0) {
                std::nth_element(cand.begin(), cand.begin() + int64_t(n_prune) - 1, cand.end());
                for (size_t i = 0; i < n_prune; ++i) pruned[size_t(cand[i].second)] = 1;
            }
        }

        for (int64_t j = 0; j < count; ++j) {
            const int64_t col = i1 + j;
            if (int64_t g = group_starting_at[size_t(col)]; g >= 0) {
                const auto& grp = spec.groups[size_t(g)];
                // Current values of the group's columns: inside the block they are up to date;
                // beyond it they still lack the pending updates of this block's columns i1..col-1.
                float vals[4];
                for (int64_t r = 0; r < rows; ++r) {
                    for (int k = 0; k < 4; ++k) {
                        const int64_t c = grp[size_t(k)];
                        float v;
                        if (c < i2) {
                            v = w1(r, c - i1);
                        } else {
                            v = w(r, c);
                            for (int64_t t = 0; t < j; ++t) v -= err1(r, t) * u(i1 + t, c);
                        }
                        const float d = u(c, c);
                        vals[k] = v * v / (d * d);
                    }
                    // Prune the two smallest scores (ties: the earlier column goes).
                    int order[4] = {0, 1, 2, 3};
                    std::stable_sort(order, order + 4, [&](int a, int b) { return vals[a] < vals[b]; });
                    pruned[size_t(r * cols + grp[size_t(order[0])])] = 1;
                    pruned[size_t(r * cols + grp[size_t(order[1])])] = 1;
                }
            }
            const float d = u(col, col);
            const float* urow = u.row(col);
#pragma omp parallel for
            for (int64_t r = 0; r < rows; ++r) {
                float* wr = w1.row(r);
                if (!pruned[size_t(r * cols + col)]) {
                    err1(r, j) = 0.0f;
                    continue;
                }
                const float e = wr[j] / d;
                err1(r, j) = e;
                wr[j] = 0.0f;
                for (int64_t t = j + 1; t < count; ++t) wr[t] -= e * urow[i1 + t];
            }
        }
        for (int64_t r = 0; r < rows; ++r) std::copy_n(w1.row(r), count, w.row(r) + i1);
        if (i2 < cols)  // W[:, i2:] -= Err1 U[i1:i2, i2:]
            gemm_nn(rows, cols - i2, count, -1.0f, err1.data.data(), count, u.row(i1) + i2, cols, 1.0f, w.row(0) + i2, cols);
    }
}

double relative_error(const Matrix& w, const Matrix& w_new, const std::vector<double>& h) {
    const int64_t rows = w.rows, cols = w.cols;
    SPENSE_CHECK(w_new.rows == rows && w_new.cols == cols && int64_t(h.size()) == cols * cols, "relative_error: shapes differ");
    // num = sum(D .* (D H)), den = sum(W .* (W H)) with D = W - W', in float64.
    const size_t n = static_cast<size_t>(rows * cols);
    std::vector<double> d(n), wd(n), dh(n), wh(n);
    for (size_t i = 0; i < n; ++i) {
        wd[i] = w.data[i];
        d[i] = wd[i] - double(w_new.data[i]);
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(rows), blasint(cols), blasint(cols), 1.0, d.data(),
                blasint(cols), h.data(), blasint(cols), 0.0, dh.data(), blasint(cols));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(rows), blasint(cols), blasint(cols), 1.0, wd.data(),
                blasint(cols), h.data(), blasint(cols), 0.0, wh.data(), blasint(cols));
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        num += d[i] * dh[i];
        den += wd[i] * wh[i];
    }
    return den > 0 ? num / den : 0.0;
}

}  // namespace spense
