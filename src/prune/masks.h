// Pruning by a score alone, without reconstruction: magnitude (score |W_ij|) and Wanda
// (score |W_ij| * ||X_j||, Sun et al. 2024). `col_scale[j]` multiplies |W_ij|: all ones for
// magnitude, the input column norms ||X_j|| for Wanda.
#pragma once

#include <vector>

#include "core/matrix.h"

namespace spense {

// In every row, in every group of 4 consecutive columns, keeps the 2 largest scores.
void prune_2to4_by_score(Matrix& w, const std::vector<double>& col_scale);

// Zeroes the `sparsity` fraction of smallest scores: within each row (Wanda's comparison group)
// when `per_row`, else over the whole matrix (magnitude).
void prune_unstructured_by_score(Matrix& w, const std::vector<double>& col_scale, double sparsity, bool per_row);

}  // namespace spense
