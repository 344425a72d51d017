#include "gpu/check.h"

namespace spense::gpu::detail {

void throw_call_error(const char* library, const char* call, const std::string& status, const char* file, int line,
                      const std::string& context) {
    fail(library, " call ", call, " failed: ", status, " at ", file, ":", line, context.empty() ? "" : " (" + context + ")");
}

std::string cuda_status(cudaError_t e) { return cat(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"); }

std::string cublas_status(cublasStatus_t s) { return cat(cublasLtGetStatusName(s), " (", cublasLtGetStatusString(s), ")"); }

#ifdef SPENSE_HAS_CUSPARSELT
std::string cusparselt_status(cusparseStatus_t s) { return cat(cusparseLtGetErrorName(s), " (", cusparseLtGetErrorString(s), ")"); }
#endif

}  // namespace spense::gpu::detail
