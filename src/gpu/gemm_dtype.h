// The input precision of the GPU GEMMs (weights and activations; outputs are always BF16).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace spense::gpu {

enum class GemmDType : uint8_t { BF16, FP8 };  // FP8: E4M3
const char* gemm_dtype_name(GemmDType t);
GemmDType parse_gemm_dtype(const std::string& s);  // bf16 | fp8
inline size_t gemm_dtype_bytes(GemmDType t) { return t == GemmDType::BF16 ? 2 : 1; }

}  // namespace spense::gpu
