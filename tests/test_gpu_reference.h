// CPU references for the GPU Spense operators, written from SPEC.md's formulas and the FP8
// definitions of src/gpu/kernels.h, not from the GPU code:
//   E4M3 (OCP FP8): 1 sign, 4 exponent (bias 7) and 3 mantissa bits, no infinities, S.1111.111 is
//   NaN, largest finite 448; conversion rounds to nearest, ties to even, and saturates to +-448.
//   Per-tensor activation scale s = amax / 448 (1 when amax = 0), q = e4m3(x / s).
//   Per-row weight scale s_j = max_c |W[j, c]| / 448 (1 for a zero row), q = e4m3(W[j, c] / s_j).
//   GLU: z = silu(gate) * up with silu(g) = g / (1 + exp(-g)).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/matrix.h"

namespace spense::test {

inline float e4m3_decode(uint8_t b) {
    const int sign = b >> 7, exp = (b >> 3) & 0xf, man = b & 0x7;
    if (exp == 0xf && man == 0x7) return std::nanf("");
    const float mag = exp == 0 ? std::ldexp(float(man) / 8.0f, -6) : std::ldexp(1.0f + float(man) / 8.0f, exp - 7);
    return sign ? -mag : mag;
}

inline uint8_t e4m3_encode(float v) {
    // The finite magnitudes, increasing with their codes 0..126.
    static const std::vector<float> mags = [] {
        std::vector<float> m(127);
        for (int c = 0; c < 127; ++c) m[size_t(c)] = e4m3_decode(uint8_t(c));
        return m;
    }();
    if (std::isnan(v)) return 0x7f;
    const uint8_t sign = std::signbit(v) ? 0x80 : 0x00;
    const float a = std::fabs(v);
    if (a >= 448.0f) return sign | 0x7e;
    // The two magnitudes around a; the nearer wins, a tie goes to the even code.
    const auto hi_it = std::upper_bound(mags.begin(), mags.end(), a);
    const uint8_t hi = uint8_t(hi_it - mags.begin()), lo = uint8_t(hi - 1);
    const float dl = a - mags[lo], dh = mags[hi] - a;
    const uint8_t code = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | code;
}

inline float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

inline float tensor_scale(const std::vector<float>& x) {
    float amax = 0;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    return amax > 0 ? amax / 448.0f : 1.0f;
}

// x -> the values e4m3(x / s) * s that FP8 represents, with the codes.
inline std::vector<float> quantize_tensor(const std::vector<float>& x, float s, std::vector<uint8_t>* codes = nullptr) {
    std::vector<float> out(x.size());
    if (codes) codes->resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        const uint8_t q = e4m3_encode(x[i] / s);
        if (codes) (*codes)[i] = q;
        out[i] = e4m3_decode(q) * s;
    }
    return out;
}

// Rows [0, rows) x columns [c0, c1) of w quantized with one scale per row (over those columns).
inline void quantize_rows(Matrix& w, int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < w.rows; ++r) {
        float amax = 0;
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w(r, c)));
        const float s = amax > 0 ? amax / 448.0f : 1.0f;
        for (int64_t c = c0; c < c1; ++c) w(r, c) = e4m3_decode(e4m3_encode(w(r, c) / s)) * s;
    }
}

inline double silu_times(double g, double u) { return g / (1.0 + std::exp(-g)) * u; }

// ||a - b|| / ||b|| over all elements.
inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        norm += double(b[i]) * b[i];
    }
    return std::sqrt(diff / norm);
}

}  // namespace spense::test
