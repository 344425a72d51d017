// Dense symmetric positive-definite factorizations in float64 (LAPACK through OpenBLAS).
// Matrices are row-major n x n.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spense {

// a <- a^-1 for symmetric positive-definite a. Throws spense::Error if a is not positive
// definite; `what` names the matrix in the message.
void spd_inverse(std::vector<double>& a, int64_t n, const std::string& what);

// a <- U, the upper-triangular factor with a = U^T U (entries below the diagonal set to 0).
void cholesky_upper(std::vector<double>& a, int64_t n, const std::string& what);

}  // namespace spense
