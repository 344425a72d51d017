#include "prune/dense_select.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/linalg.h"

namespace spense {

int64_t spense_dense_count(int64_t d_ff, int64_t hidden, double sparsity, int64_t align) {
    if (!(sparsity == 0.5 || sparsity == 0.375 || sparsity == 0.25))
        fail("MLP sparsity ", sparsity, " is not one of 0.5 (plain 2:4), 0.375 and 0.25");
    if (d_ff % 4 != 0) fail("intermediate size ", d_ff, " is not a multiple of 4, so it cannot be split into 2:4 groups");
    if (hidden % 4 != 0) fail("hidden size ", hidden, " is not a multiple of 4, so gate/up rows cannot be 2:4");
    if (align <= 0 || align % 4 != 0) fail("--align ", align, " must be a positive multiple of 4");
    const double rho = 1.0 - 2.0 * sparsity;
    if (rho == 0.0) return 0;
    if (align > d_ff) fail("--align ", align, " is larger than the intermediate size ", d_ff, "; use a smaller --align");
    const double want = rho * double(d_ff);
    const int64_t k = align * std::llround(want / double(align));
    if (std::fabs(double(k) - want) > 0.1 * want) {
        int64_t fits = 4;
        for (int64_t a = 4; a <= d_ff; a *= 2)
            if (std::fabs(double(a * std::llround(want / double(a))) - want) <= 0.1 * want) fits = a;
        fail("dense ratio ", rho, " of intermediate size ", d_ff, " is ", want, " indices, but --align ", align, " rounds it to ", k,
             "; use --align ", fits, " or smaller");
    }
    return k;
}

IndexSums index_sums(const Matrix& gate, const Matrix& up, const Matrix& down, const std::vector<double>& c_in,
                     const std::vector<double>& c_z) {
    const int64_t f = gate.rows, d = gate.cols;
    SPENSE_CHECK(int64_t(c_in.size()) == d && int64_t(c_z.size()) == f && down.cols == f, "index_sums: shapes differ");
    IndexSums s{std::vector<double>(size_t(f)), std::vector<double>(size_t(f)), std::vector<double>(size_t(f), 0.0)};
    for (int64_t i = 0; i < f; ++i) {
        double a = 0, b = 0;
        for (int64_t j = 0; j < d; ++j) {
            a += double(gate(i, j)) * gate(i, j) * c_in[size_t(j)];
            b += double(up(i, j)) * up(i, j) * c_in[size_t(j)];
        }
        s.gate[size_t(i)] = a;
        s.up[size_t(i)] = b;
    }
    for (int64_t r = 0; r < down.rows; ++r)
        for (int64_t i = 0; i < f; ++i) s.down[size_t(i)] += double(down(r, i)) * down(r, i);
    for (int64_t i = 0; i < f; ++i) s.down[size_t(i)] *= c_z[size_t(i)];
    return s;
}

std::vector<double> index_priority(const IndexSums& s) {
    SPENSE_CHECK(s.gate.size() == s.up.size() && s.up.size() == s.down.size(), "index_priority: sums of different lengths");
    auto mean = [](const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size()); };
    const double mg = mean(s.gate), mu = mean(s.up), md = mean(s.down);
    std::vector<double> p(s.gate.size());
    for (size_t i = 0; i < p.size(); ++i)
        p[i] = (mg > 0 ? s.gate[i] / mg : 0) + (mu > 0 ? s.up[i] / mu : 0) + (md > 0 ? s.down[i] / md : 0);
    return p;
}

std::vector<double> sparsegpt_column_weights(std::vector<double> h, int64_t dim, double percdamp, const std::string& what) {
    double mean_diag = 0;
    for (int64_t j = 0; j < dim; ++j) {
        if (h[size_t(j * dim + j)] == 0.0) h[size_t(j * dim + j)] = 1.0;
        mean_diag += h[size_t(j * dim + j)];
    }
    for (int64_t j = 0; j < dim; ++j) h[size_t(j * dim + j)] += percdamp * mean_diag / double(dim);
    spd_inverse(h, dim, what + " Hessian");
    cholesky_upper(h, dim, what + " inverse Hessian");
    std::vector<double> c(static_cast<size_t>(dim));
    for (int64_t j = 0; j < dim; ++j) c[size_t(j)] = 1.0 / (h[size_t(j * dim + j)] * h[size_t(j * dim + j)]);
    return c;
}

std::vector<int64_t> top_k_indices(const std::vector<double>& p, int64_t k) {
    std::vector<int64_t> idx(p.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return p[size_t(a)] > p[size_t(b)]; });
    idx.resize(size_t(k));
    std::sort(idx.begin(), idx.end());
    return idx;
}

DenseLayout parse_dense_layout(const std::string& s) {
    if (s == "back") return DenseLayout::Back;
    if (s == "front") return DenseLayout::Front;
    if (s == "inplace") return DenseLayout::InPlace;
    fail("--layout '", s, "' is not one of: back, front, inplace");
}

const char* dense_layout_name(DenseLayout l) {
    switch (l) {
        case DenseLayout::Back: return "back";
        case DenseLayout::Front: return "front";
        case DenseLayout::InPlace: return "inplace";
    }
    return "?";
}

IndexOrders index_orders(int64_t d_ff, const std::vector<int64_t>& dense, DenseLayout layout) {
    std::vector<uint8_t> is_dense(static_cast<size_t>(d_ff), 0);
    for (int64_t i : dense) {
        SPENSE_CHECK(i >= 0 && i < d_ff && !is_dense[size_t(i)], "dense index ", i, " repeated or outside [0, ", d_ff, ")");
        is_dense[size_t(i)] = 1;
    }
    std::vector<int64_t> sparse_idx, dense_idx;
    for (int64_t i = 0; i < d_ff; ++i) (is_dense[size_t(i)] ? dense_idx : sparse_idx).push_back(i);
    SPENSE_CHECK(sparse_idx.size() % 4 == 0, "the sparse region of ", sparse_idx.size(), " indices is not a multiple of 4");

    IndexOrders o;
    o.runtime = sparse_idx;
    o.runtime.insert(o.runtime.end(), dense_idx.begin(), dense_idx.end());
    switch (layout) {
        case DenseLayout::Back: o.pruning = o.runtime; break;
        case DenseLayout::Front:
            o.pruning = dense_idx;
            o.pruning.insert(o.pruning.end(), sparse_idx.begin(), sparse_idx.end());
            break;
        case DenseLayout::InPlace:
            o.pruning.resize(size_t(d_ff));
            std::iota(o.pruning.begin(), o.pruning.end(), 0);
            break;
    }
    std::vector<int64_t> position(static_cast<size_t>(d_ff));
    for (int64_t p = 0; p < d_ff; ++p) position[size_t(o.pruning[size_t(p)])] = p;
    o.dense_position.assign(size_t(d_ff), 0);
    for (int64_t i : dense_idx) o.dense_position[size_t(position[size_t(i)])] = 1;
    // Sparse indices in runtime order are ascending, and in every layout their pruning positions
    // ascend too, so each group's positions are ascending.
    for (size_t g = 0; g < sparse_idx.size(); g += 4)
        o.groups.push_back({position[size_t(sparse_idx[g])], position[size_t(sparse_idx[g + 1])], position[size_t(sparse_idx[g + 2])],
                            position[size_t(sparse_idx[g + 3])]});
    return o;
}

}  // namespace spense
