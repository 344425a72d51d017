#include "gpu/gemm.h"

#include "core/error.h"

namespace spense::gpu {

const char* gemm_dtype_name(GemmDType t) { return t == GemmDType::BF16 ? "bf16" : "fp8"; }

GemmDType parse_gemm_dtype(const std::string& s) {
    if (s == "bf16") return GemmDType::BF16;
    if (s == "fp8") return GemmDType::FP8;
    fail("GEMM type '", s, "' is not one of: bf16, fp8");
}

std::string GemmShape::describe() const {
    return cat(gemm_dtype_name(dtype), " m=", m, " k=", k, " ldb=", ldb, " ldc=", ldc, " beta=", accumulate ? 1 : 0);
}

int64_t token_bucket(int64_t n) {
    int64_t b = 1;
    while (b < n) b *= 2;
    return b;
}

}  // namespace spense::gpu
