// Calibration statistics of one linear layer's input X [tokens, d_in], accumulated batch by batch:
//   H = 2 X^T X / tokens   (SPEC.md, SparseGPT step 1)
// Each batch's X^T X is formed in float32 by BLAS and summed into float64, so that many batches
// of many tokens do not lose the small ones to rounding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/matrix.h"

namespace spense {

class HessianAccumulator {
public:
    // `what` names the layer input in error messages ("layer 3 mlp input").
    HessianAccumulator(int64_t dim, std::string what);

    // Adds the rows of x. Throws if x holds NaN or infinity (naming the layer input), since one
    // such value would silently poison every pruning decision downstream.
    void add(const Matrix& x);

    int64_t dim() const { return dim_; }
    int64_t tokens() const { return tokens_; }
    // H = 2 X^T X / tokens, row-major [dim, dim].
    std::vector<double> hessian() const;
    // ||X[:, j]||^2 for every input column j (the Wanda norms, squared).
    std::vector<double> column_sq_norms() const;

private:
    int64_t dim_;
    std::string what_;
    int64_t tokens_ = 0;
    std::vector<double> sum_;  // X^T X
    Matrix batch_;             // scratch for one batch's product
};

// acc[j] += ||x[:, j]||^2 (float64): the Wanda column norms, without the full X^T X.
void accumulate_column_sq_norms(const Matrix& x, std::vector<double>& acc);

}  // namespace spense
