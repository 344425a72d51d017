#include "prune/hessian.h"

#include <cblas.h>

#include <cmath>

#include "core/error.h"

namespace spense {

HessianAccumulator::HessianAccumulator(int64_t dim, std::string what)
    : dim_(dim), what_(std::move(what)), sum_(size_t(dim * dim), 0.0) {}

void HessianAccumulator::add(const Matrix& x) {
    SPENSE_CHECK(x.cols == dim_, what_, ": batch has ", x.cols, " features, expected ", dim_);
    for (size_t i = 0; i < x.data.size(); ++i)
        if (!std::isfinite(x.data[i]))
            fail("non-finite value (", x.data[i], ") in the calibration activations of ", what_, " at token ",
                 int64_t(i) / x.cols, ", feature ", int64_t(i) % x.cols,
                 "; the model overflows on the calibration text (check the checkpoint's dtype and weights)");
    batch_.assign(x.data.begin(), x.data.end());
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, blasint(dim_), blasint(x.rows), 1.0, batch_.data(), blasint(dim_), 1.0,
                sum_.data(), blasint(dim_));
    tokens_ += x.rows;
}

std::vector<double> HessianAccumulator::hessian() const {
    SPENSE_CHECK(tokens_ > 0, what_, ": no calibration tokens were accumulated");
    std::vector<double> h(sum_.size());
    const double scale = 2.0 / double(tokens_);
    for (int64_t r = 0; r < dim_; ++r)
        for (int64_t c = r; c < dim_; ++c) h[size_t(r * dim_ + c)] = h[size_t(c * dim_ + r)] = scale * sum_[size_t(r * dim_ + c)];
    return h;
}

std::vector<double> HessianAccumulator::column_sq_norms() const {
    std::vector<double> n(static_cast<size_t>(dim_));
    for (int64_t j = 0; j < dim_; ++j) n[size_t(j)] = sum_[size_t(j * dim_ + j)];
    return n;
}

void accumulate_column_sq_norms(const Matrix& x, std::vector<double>& acc) {
    SPENSE_CHECK(int64_t(acc.size()) == x.cols, "column norms: ", acc.size(), " accumulators for ", x.cols, " columns");
    for (int64_t r = 0; r < x.rows; ++r) {
        const float* row = x.row(r);
        for (int64_t c = 0; c < x.cols; ++c) acc[size_t(c)] += double(row[c]) * row[c];
    }
}

}  // namespace spense
