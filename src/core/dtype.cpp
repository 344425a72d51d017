#include "core/dtype.h"

#include <array>
#include <cmath>

#include "core/error.h"

namespace spense {

namespace {

// Byte layouts of the GGML block formats (little endian, as ggml-common.h declares them).
// Q8_0: {f16 d; i8 q[32]}                          x = d*q
// Q4_0: {f16 d; u8 q[16]}                          x[j] = d*(lo(q[j]) - 8), x[j+16] = d*(hi(q[j]) - 8)
// Q4_1: {f16 d; f16 m; u8 q[16]}                   x = d*nibble + m, same nibble order as Q4_0
// Q5_0: {f16 d; u32 qh; u8 q[16]}                  5th bit of element j in bit j of qh; x = d*(q5 - 16)
// Q5_1: {f16 d; f16 m; u32 qh; u8 q[16]}           x = d*q5 + m
// Q4_K: {f16 d; f16 dmin; u8 scales[12]; u8 q[128]}            256 elements, 8 sub-blocks of 32
// Q5_K: {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 q[128]} 256 elements
// Q6_K: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}          256 elements, 16 sub-blocks of 16
constexpr std::array<DTypeInfo, 11> kInfo{{
    {"F32", 1, 4},
    {"F16", 1, 2},
    {"BF16", 1, 2},
    {"Q8_0", 32, 34},
    {"Q4_0", 32, 18},
    {"Q4_1", 32, 20},
    {"Q5_0", 32, 22},
    {"Q5_1", 32, 24},
    {"Q4_K", 256, 144},
    {"Q5_K", 256, 176},
    {"Q6_K", 256, 210},
}};

uint16_t load_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }
uint32_t load_u32(const uint8_t* p) {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

// 6-bit scale and min of sub-block j of a Q4_K/Q5_K block, packed into 12 bytes.
void scale_min_k4(int j, const uint8_t* q, float* sc, float* mn) {
    if (j < 4) {
        *sc = float(q[j] & 63);
        *mn = float(q[j + 4] & 63);
    } else {
        *sc = float((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = float((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void decode_block(DType t, const uint8_t* b, float* y) {
    switch (t) {
        case DType::Q8_0: {
            float d = load_f16(b);
            for (int j = 0; j < 32; ++j) y[j] = d * float(int8_t(b[2 + j]));
            return;
        }
        case DType::Q4_0: {
            float d = load_f16(b);
            for (int j = 0; j < 16; ++j) {
                y[j] = d * float((b[2 + j] & 0xF) - 8);
                y[j + 16] = d * float((b[2 + j] >> 4) - 8);
            }
            return;
        }
        case DType::Q4_1: {
            float d = load_f16(b), m = load_f16(b + 2);
            for (int j = 0; j < 16; ++j) {
                y[j] = d * float(b[4 + j] & 0xF) + m;
                y[j + 16] = d * float(b[4 + j] >> 4) + m;
            }
            return;
        }
        case DType::Q5_0:
        case DType::Q5_1: {
            bool has_min = t == DType::Q5_1;
            float d = load_f16(b), m = has_min ? load_f16(b + 2) : 0.0f;
            const uint8_t* p = b + (has_min ? 4 : 2);
            uint32_t qh = load_u32(p);
            const uint8_t* q = p + 4;
            int offset = has_min ? 0 : 16;
            for (int j = 0; j < 16; ++j) {
                int lo = (q[j] & 0xF) | int(((qh >> j) & 1u) << 4);
                int hi = (q[j] >> 4) | int(((qh >> (j + 16)) & 1u) << 4);
                y[j] = d * float(lo - offset) + m;
                y[j + 16] = d * float(hi - offset) + m;
            }
            return;
        }
        case DType::Q4_K:
        case DType::Q5_K: {
            bool five = t == DType::Q5_K;
            float d = load_f16(b), dmin = load_f16(b + 2);
            const uint8_t* scales = b + 4;
            const uint8_t* qh = b + 16;
            const uint8_t* q = five ? b + 48 : b + 16;
            for (int j = 0; j < 4; ++j) {  // 64 elements per step: two sub-blocks sharing bytes
                float sc0, m0, sc1, m1;
                scale_min_k4(2 * j, scales, &sc0, &m0);
                scale_min_k4(2 * j + 1, scales, &sc1, &m1);
                for (int l = 0; l < 32; ++l) {
                    int lo = q[l] & 0xF, hi = q[l] >> 4;
                    if (five) {
                        lo += ((qh[l] >> (2 * j)) & 1) << 4;
                        hi += ((qh[l] >> (2 * j + 1)) & 1) << 4;
                    }
                    y[64 * j + l] = d * sc0 * float(lo) - dmin * m0;
                    y[64 * j + 32 + l] = d * sc1 * float(hi) - dmin * m1;
                }
                q += 32;
            }
            return;
        }
        case DType::Q6_K: {
            const uint8_t* ql = b;
            const uint8_t* qh = b + 128;
            const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
            float d = load_f16(b + 208);
            for (int half = 0; half < 2; ++half) {  // 128 elements per half
                for (int l = 0; l < 32; ++l) {
                    int is = l / 16;
                    int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * float(sc[is]) * float(q1);
                    y[l + 32] = d * float(sc[is + 2]) * float(q2);
                    y[l + 64] = d * float(sc[is + 4]) * float(q3);
                    y[l + 96] = d * float(sc[is + 6]) * float(q4);
                }
                y += 128;
                ql += 64;
                qh += 32;
                sc += 8;
            }
            return;
        }
        default:
            fail("internal: decode_block called with plain type ", dtype_name(t));
    }
}

}  // namespace

const DTypeInfo& dtype_info(DType t) { return kInfo.at(size_t(t)); }

size_t dtype_bytes(DType t, int64_t n) {
    const DTypeInfo& info = dtype_info(t);
    SPENSE_CHECK(n >= 0 && n % info.block_elems == 0, n, " elements are not a whole number of ",
                 info.name, " blocks of ", info.block_elems);
    return size_t(n / info.block_elems) * size_t(info.block_bytes);
}

void to_f32(DType t, const void* src, int64_t n, float* dst) {
    const auto* p = static_cast<const uint8_t*>(src);
    switch (t) {
        case DType::F32:
            std::memcpy(dst, p, size_t(n) * 4);
            return;
        case DType::F16:
            for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(p + 2 * i);
            return;
        case DType::BF16:
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(p + 2 * i));
            return;
        default: {
            const DTypeInfo& info = dtype_info(t);
            SPENSE_CHECK(n % info.block_elems == 0, n, " elements are not a whole number of ", info.name,
                         " blocks");
            for (int64_t b = 0; b < n / info.block_elems; ++b)
                decode_block(t, p + b * info.block_bytes, dst + b * info.block_elems);
        }
    }
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalise the mantissa
            int e = -1;
            do {
                ++e;
                man <<= 1;
            } while ((man & 0x400) == 0);
            bits = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    uint16_t sign = uint16_t((bits >> 16) & 0x8000);
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00);  // NaN
    if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds to >= 65520: inf
    if (abs < 0x38800000u) {                                  // below the smallest normal half
        // Scale into the subnormal range and let float arithmetic round to nearest even.
        float a;
        std::memcpy(&a, &abs, 4);
        return uint16_t(sign | uint16_t(std::nearbyint(a * 16777216.0f)));  // 2^24
    }
    uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return uint16_t(sign | ((rounded - 0x38000000u) >> 13));
}

}  // namespace spense
