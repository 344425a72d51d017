// The precisions of the GPU GEMMs: of their inputs (weights and activations) and of their outputs,
// and how their outputs may come in parts (gemm.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace spense::gpu {

enum class GemmDType : uint8_t { BF16, FP8 };  // FP8: E4M3
const char* gemm_dtype_name(GemmDType t);
GemmDType parse_gemm_dtype(const std::string& s);  // bf16 | fp8
inline size_t gemm_dtype_bytes(GemmDType t) { return t == GemmDType::BF16 ? 2 : 1; }

// Outputs: BF16, or float32 where their rounding matters (the BF16 decode engine, decode_engine.h).
enum class GemmOut : uint8_t { BF16, F32 };
inline size_t gemm_out_bytes(GemmOut o) { return o == GemmOut::BF16 ? 2 : 4; }

// The most products a reader adds: the parts of k of one GEMM (GemmShape::max_k_parts) and, in the
// Spense MLP's down, the dense region's product after the 2:4 region's (spense_mlp.h).
constexpr int64_t kMaxKParts = 8;

// Where a run left products for its reader to add: `count` blocks of [rows, ldc], `stride` elements apart.
struct ProductParts {
    int count = 1;
    int64_t stride = 0;
};

}  // namespace spense::gpu
