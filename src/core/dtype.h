// Element types of stored tensors and their conversion to float32.
//
// Plain types (F32, F16, BF16) hold one value per element. Block-quantized types (the GGML
// formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) hold a block of elements per record along the
// innermost (contiguous) dimension; a row's length must be a multiple of the block size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace spense {

enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K };

struct DTypeInfo {
    std::string_view name;
    int block_elems;  // elements per block (1 for plain types)
    int block_bytes;  // bytes per block
};

const DTypeInfo& dtype_info(DType t);
inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }

// Bytes taken by `n` elements; throws if n is not a whole number of blocks.
size_t dtype_bytes(DType t, int64_t n);

// Decode `n` elements of type `t` starting at `src` into float32.
void to_f32(DType t, const void* src, int64_t n, float* dst);

inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even, overflow to inf

}  // namespace spense
