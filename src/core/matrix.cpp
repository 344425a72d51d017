#include "core/matrix.h"

#include <cblas.h>

#include "core/error.h"

namespace spense {

Matrix::Matrix(int64_t r, int64_t c, std::vector<float> d) : rows(r), cols(c), data(std::move(d)) {
    SPENSE_CHECK(int64_t(data.size()) == r * c, "Matrix: ", data.size(), " values for shape [", r, ", ", c, "]");
}

void gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
             float beta, float* c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b,
                blasint(ldb), beta, c, blasint(ldc));
}

void gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
             float beta, float* c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b,
                blasint(ldb), beta, c, blasint(ldc));
}

void linear(const Matrix& x, const Matrix& w, Matrix& y, float beta) {
    SPENSE_CHECK(x.cols == w.cols, "linear: input has ", x.cols, " features, weight [", w.rows, ", ", w.cols, "] expects ", w.cols);
    if (beta == 0.0f) {
        if (y.rows != x.rows || y.cols != w.rows) y = Matrix(x.rows, w.rows);
    } else {
        SPENSE_CHECK(y.rows == x.rows && y.cols == w.rows, "linear: accumulating into [", y.rows, ", ", y.cols, "], need [",
                     x.rows, ", ", w.rows, "]");
    }
    gemm_nt(x.rows, w.rows, x.cols, 1.0f, x.data.data(), x.cols, w.data.data(), w.cols, beta, y.data.data(), y.cols);
}

}  // namespace spense
