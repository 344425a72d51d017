// SparseGPT (Frantar & Alistarh 2023) as SPEC.md states it: one-shot pruning of a linear layer
// W [rows, cols] with OBS reconstruction against the input Hessian H = 2 X^T X / n [cols, cols].
//
//   dead inputs (H_jj = 0): H_jj = 1, W[:, j] = 0
//   H += percdamp * mean(diag H) * I;   U = cholesky_upper(H^-1)   (H^-1 = U^T U)
//   columns left to right, in blocks of B: at the first column of each 2:4 group, prune in every
//   row the 2 of the group's 4 weights with the smallest w^2 / U_cc^2; then for each column j:
//     q = W[:, j] with the pruned entries zeroed;  err = (W[:, j] - q) / U_jj
//     W[:, j+1 : block end] -= err U[j, j+1 : block end]
//   after each block: W[:, block end :] -= Err_block U[block, block end :]
// A processed column is frozen; only columns to its right absorb its error.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/matrix.h"

namespace spense {

struct SparseGptOptions {
    double percdamp = 0.01;
    int64_t blocksize = 128;
};

// Which weights of W may be pruned and how.
struct PruneSpec {
    enum class Pattern { TwoFour, Unstructured } pattern = Pattern::TwoFour;
    // TwoFour: the 4 column indices of each group, ascending. A group's columns need not be
    // adjacent (the in-place layout forms groups over the sparse columns in runtime order).
    std::vector<std::array<int64_t, 4>> groups;
    // Unstructured: the fraction of prunable weights pruned within each block of columns.
    double sparsity = 0.5;
    // Per column: 1 = never pruned (it still absorbs error from the columns to its left).
    std::vector<uint8_t> dense_column;

    // 2:4 over columns [first, last) in adjacent groups, every other column dense.
    static PruneSpec two_four(int64_t cols, int64_t first, int64_t last);
    static PruneSpec unstructured(int64_t cols, double sparsity);
};

// Prunes W in place. `what` names the weight in error messages.
void sparsegpt_prune(Matrix& w, std::vector<double> hessian, const PruneSpec& spec, const SparseGptOptions& opt,
                     const std::string& what);

// Relative reconstruction error of W' against W on inputs with Hessian H:
//   tr((W - W') H (W - W')^T) / tr(W H W^T) = ||X W^T - X W'^T||^2 / ||X W^T||^2.
double relative_error(const Matrix& w, const Matrix& w_new, const std::vector<double>& hessian);

}  // namespace spense
