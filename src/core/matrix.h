// Dense row-major float32 matrices and the BLAS-backed products the CPU paths use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace spense {

struct Matrix {
    int64_t rows = 0, cols = 0;
    std::vector<float> data;

    Matrix() = default;
    Matrix(int64_t r, int64_t c) : rows(r), cols(c), data(size_t(r * c)) {}
    Matrix(int64_t r, int64_t c, std::vector<float> d);

    float* row(int64_t r) { return data.data() + r * cols; }
    const float* row(int64_t r) const { return data.data() + r * cols; }
    float& operator()(int64_t r, int64_t c) { return data[size_t(r * cols + c)]; }
    float operator()(int64_t r, int64_t c) const { return data[size_t(r * cols + c)]; }
    bool empty() const { return data.empty(); }
};

// y = x W^T + beta*y, the PyTorch linear convention: x [n, in], W [out, in], y [n, out].
// y must already have shape [n, out] when beta != 0.
void linear(const Matrix& x, const Matrix& w, Matrix& y, float beta = 0.0f);

// C = alpha * A B^T + beta * C over strided row-major views (lda/ldb/ldc in elements):
// A [m, k], B [n, k], C [m, n].
void gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
             float beta, float* c, int64_t ldc);
// C = alpha * A B + beta * C: A [m, k], B [k, n], C [m, n].
void gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
             float beta, float* c, int64_t ldc);

}  // namespace spense
