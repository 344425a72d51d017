// One family of checks for every CUDA runtime, cuBLAS(Lt), cuSOLVER and cuSPARSELt call. On failure each
// throws spense::Error with the call as written, the library's status name and message, file:line,
// and the caller's context (which tensor, which shape):
//
//   SPENSE_CUDA_CHECK(cudaMalloc(&p, n), "weights of down [", d, ", ", f, "]");
//   -> "CUDA call cudaMalloc(&p, n) failed: cudaErrorMemoryAllocation (out of memory) at
//       src/gpu/device_buffer.cpp:12 (weights of down [5120, 25600])"
//
// Kernel launches are checked with SPENSE_CUDA_CHECK(cudaGetLastError(), ...) right after the launch.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <string>
#include <utility>

#include "core/error.h"

#ifdef SPENSE_HAS_CUSPARSELT
#include <cusparseLt.h>
#endif

namespace spense::gpu::detail {

[[noreturn]] void throw_call_error(const char* library, const char* call, const std::string& status, const char* file, int line,
                                   const std::string& context);

// The caller's context words, or nothing.
inline std::string context() { return {}; }
template <typename... Args>
std::string context(Args&&... args) {
    return cat(std::forward<Args>(args)...);
}

std::string cuda_status(cudaError_t e);
std::string cublas_status(cublasStatus_t s);
std::string cusolver_status(cusolverStatus_t s);
#ifdef SPENSE_HAS_CUSPARSELT
std::string cusparselt_status(cusparseStatus_t s);
#endif

}  // namespace spense::gpu::detail

#define SPENSE_GPU_CHECK_IMPL_(library, ok, status_fn, call, ...)                                                           \
    do {                                                                                                                  \
        const auto spense_status_ = (call);                                                                               \
        if (spense_status_ != (ok))                                                                                       \
            ::spense::gpu::detail::throw_call_error(library, #call, status_fn(spense_status_), __FILE__, __LINE__,          \
                                                    ::spense::gpu::detail::context(__VA_ARGS__));                         \
    } while (0)

#define SPENSE_CUDA_CHECK(call, ...) \
    SPENSE_GPU_CHECK_IMPL_("CUDA", cudaSuccess, ::spense::gpu::detail::cuda_status, call, __VA_ARGS__)
#define SPENSE_CUBLAS_CHECK(call, ...) \
    SPENSE_GPU_CHECK_IMPL_("cuBLASLt", CUBLAS_STATUS_SUCCESS, ::spense::gpu::detail::cublas_status, call, __VA_ARGS__)
#define SPENSE_CUSOLVER_CHECK(call, ...) \
    SPENSE_GPU_CHECK_IMPL_("cuSOLVER", CUSOLVER_STATUS_SUCCESS, ::spense::gpu::detail::cusolver_status, call, __VA_ARGS__)
#define SPENSE_CUSPARSELT_CHECK(call, ...) \
    SPENSE_GPU_CHECK_IMPL_("cuSPARSELt", CUSPARSE_STATUS_SUCCESS, ::spense::gpu::detail::cusparselt_status, call, __VA_ARGS__)
