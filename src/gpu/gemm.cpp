#include "gpu/gemm.h"

#include <chrono>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/kernels.h"

namespace spense::gpu {

const char* gemm_dtype_name(GemmDType t) { return t == GemmDType::BF16 ? "bf16" : "fp8"; }

GemmDType parse_gemm_dtype(const std::string& s) {
    if (s == "bf16") return GemmDType::BF16;
    if (s == "fp8") return GemmDType::FP8;
    fail("GEMM type '", s, "' is not one of: bf16, fp8");
}

std::string GemmShape::describe() const {
    return cat(gemm_dtype_name(dtype), " m=", m, " k=", k, " ldb=", ldb, " ldc=", ldc, " beta=", accumulate ? 1 : 0,
               out == GemmOut::F32 ? " out=f32" : "", max_k_parts > 1 ? cat(" k_parts<=", max_k_parts) : "");
}

int64_t token_bucket(int64_t n) {
    int64_t b = 1;
    while (b < n) b *= 2;
    return b;
}

namespace {

double now_seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

GemmSearch::GemmSearch(GpuContext& ctx, const GemmShape& s, int64_t bucket, cudaStream_t stream) : ctx_(ctx), start_(now_seconds()) {
    const size_t x_bytes = round_up(size_t(bucket * s.ldb) * gemm_dtype_bytes(s.dtype), 256);
    const size_t y_bytes = round_up(size_t(s.out_elements(bucket)) * gemm_out_bytes(s.out), 256);
    auto* base = static_cast<uint8_t*>(ctx.search_scratch(x_bytes + y_bytes));
    x_ = base;
    y_ = base + x_bytes;
    launch_random_activations(s.dtype, x_, bucket * s.ldb, 1.0f, 0x5eed, stream);
    SPENSE_CUDA_CHECK(cudaMemsetAsync(y_, 0, y_bytes, stream), "search output of ", s.describe());
}

GemmSearch::~GemmSearch() {
    ctx_.stats().searches++;
    ctx_.stats().search_seconds += now_seconds() - start_;
}

}  // namespace spense::gpu
