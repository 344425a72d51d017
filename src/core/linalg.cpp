#include "core/linalg.h"

#include "core/error.h"

extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
}

namespace spense {

// LAPACK is column-major; a row-major symmetric matrix is its own column-major transpose, and the
// column-major lower factor L (a = L L^T) read row-major is U = L^T (a = U^T U).

void spd_inverse(std::vector<double>& a, int64_t n, const std::string& what) {
    SPENSE_CHECK(int64_t(a.size()) == n * n, "spd_inverse: ", a.size(), " values for n = ", n);
    int nn = int(n), info = 0;
    dpotrf_("L", &nn, a.data(), &nn, &info, 1);
    if (info > 0) fail(what, " is not positive definite (Cholesky failed at column ", info - 1, "); increase --percdamp");
    SPENSE_CHECK(info == 0, "dpotrf: argument ", -info, " invalid");
    dpotri_("L", &nn, a.data(), &nn, &info, 1);
    if (info > 0) fail(what, " is singular (inverse failed at column ", info - 1, "); increase --percdamp");
    // dpotri filled the column-major lower triangle = the row-major upper one; mirror it.
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < r; ++c) a[size_t(r * n + c)] = a[size_t(c * n + r)];
}

void cholesky_upper(std::vector<double>& a, int64_t n, const std::string& what) {
    SPENSE_CHECK(int64_t(a.size()) == n * n, "cholesky_upper: ", a.size(), " values for n = ", n);
    int nn = int(n), info = 0;
    dpotrf_("L", &nn, a.data(), &nn, &info, 1);
    if (info > 0) fail(what, " is not positive definite (Cholesky failed at column ", info - 1, "); increase --percdamp");
    SPENSE_CHECK(info == 0, "dpotrf: argument ", -info, " invalid");
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < r; ++c) a[size_t(r * n + c)] = 0.0;
}

}  // namespace spense
