// Choosing the dense region of a Spense MLP (SPEC.md, SpenseGPT and SpenseGPT+).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/matrix.h"

namespace spense {

// k, the number of dense intermediate indices for MLP sparsity s: the dense ratio is
// rho = 1 - 2 s, and k = A * round(rho * d_ff / A). Throws when the shape cannot hold it: s not
// in {0.5, 0.375, 0.25}, d_ff or hidden not a multiple of 4, A not a positive multiple of 4,
// A larger than d_ff, or a k that misses rho * d_ff by more than 10% (suggesting the largest
// alignment that fits).
int64_t spense_dense_count(int64_t d_ff, int64_t hidden, double sparsity, int64_t align);

// Element scores S_ij = W_ij^2 * c_j summed per intermediate index i: over row i of gate and of
// up (c_in weighs the MLP input features) and over column i of down (c_z weighs the
// intermediate features).
//   Wanda-style (SpenseGPT+):  c_j = ||X_j||^2            (diagonal of X^T X)
//   SparseGPT-like (ablation): c_j = 1 / U_jj^2           (U = cholesky_upper(H^-1))
struct IndexSums {
    std::vector<double> gate, up, down;
};
IndexSums index_sums(const Matrix& gate, const Matrix& up, const Matrix& down, const std::vector<double>& c_in,
                     const std::vector<double>& c_z);

// Per-index priority p[i] = s_gate[i]/mean(s_gate) + s_up[i]/mean(s_up) + s_down[i]/mean(s_down).
std::vector<double> index_priority(const IndexSums& s);

// 1 / U_jj^2 for the damped Hessian H (SparseGPT's column weights for the ablation score).
std::vector<double> sparsegpt_column_weights(std::vector<double> hessian, int64_t dim, double percdamp, const std::string& what);

// The k indices of largest priority (ties: the lower index), ascending.
std::vector<int64_t> top_k_indices(const std::vector<double>& priority, int64_t k);

enum class DenseLayout { Back, Front, InPlace };
DenseLayout parse_dense_layout(const std::string& s);  // "back" | "front" | "inplace"
const char* dense_layout_name(DenseLayout l);

// The orders of intermediate indices: `runtime` puts the sparse indices first (ascending) and the
// dense ones last (ascending), as the Spense format stores them. `pruning` is the order SparseGPT
// processes down's columns in: runtime order (back), dense first (front), or the original order
// (in place). `groups` are the 2:4 groups of down's columns as positions in the pruning order,
// formed over the sparse indices in runtime order; `dense_position[p]` marks dense positions.
struct IndexOrders {
    std::vector<int64_t> runtime, pruning;
    std::vector<std::array<int64_t, 4>> groups;
    std::vector<uint8_t> dense_position;
};
IndexOrders index_orders(int64_t d_ff, const std::vector<int64_t>& dense, DenseLayout layout);

}  // namespace spense
