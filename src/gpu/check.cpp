#include "gpu/check.h"

namespace spense::gpu::detail {

void throw_call_error(const char* library, const char* call, const std::string& status, const char* file, int line,
                      const std::string& context) {
    fail(library, " call ", call, " failed: ", status, " at ", file, ":", line, context.empty() ? "" : " (" + context + ")");
}

std::string cuda_status(cudaError_t e) { return cat(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"); }

std::string cublas_status(cublasStatus_t s) { return cat(cublasLtGetStatusName(s), " (", cublasLtGetStatusString(s), ")"); }

// cuSOLVER has no status-name function; its header's enumerators, by value.
std::string cusolver_status(cusolverStatus_t s) {
    switch (s) {
        case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
        case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
        case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
        case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
        case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
        case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
        default: return cat("cusolverStatus_t ", int(s));
    }
}

#ifdef SPENSE_HAS_CUSPARSELT
std::string cusparselt_status(cusparseStatus_t s) { return cat(cusparseLtGetErrorName(s), " (", cusparseLtGetErrorString(s), ")"); }
#endif

}  // namespace spense::gpu::detail
