// The decode engine's row kernels (src/gpu/decode_kernels.h) against CPU references in double:
// residual add + RMSNorm + quantization, and SwiGLU + quantization, with rows split over clusters
// of 1 to 8 CTAs (widths from 64 to 40008, slices that do not divide evenly and need several
// passes of a CTA), padding rows past n, scaled FP8 inputs with a bias (and, for the residual add,
// a second product of the same scales) and plain BF16 ones, FP8 and BF16 outputs. FP8 codes decoded with their row scale lie within e4m3's rounding (half a
// step: 1/16 relative) of the reference; the scale itself within float rounding of amax / 448.
// GPU tests skip themselves where no CUDA device is present.
#include <gtest/gtest.h>

#ifdef SPENSE_HAS_CUDA

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/decode_kernels.h"
#include "gpu/device_buffer.h"
#include "test_gpu.h"
#include "test_gpu_reference.h"

namespace spense {
namespace {

using gpu::ActOut;
using gpu::DeviceBuffer;
using gpu::ScaledRows;

template <typename T>
DeviceBuffer upload(const std::vector<T>& v) {
    DeviceBuffer b(std::max<size_t>(v.size() * sizeof(T), 16), "test input");
    b.upload(v.data(), v.size() * sizeof(T));
    return b;
}

template <typename T>
std::vector<T> download(const DeviceBuffer& b, size_t count) {
    std::vector<T> v(count);
    b.download(v.data(), count * sizeof(T));
    return v;
}

std::vector<float> uniform(size_t count, float lo, float hi, std::mt19937_64& rng) {
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(count);
    for (auto& x : v) x = u(rng);
    return v;
}

// A GEMM's raw output [n, ld] (BF16, or float32) with per-row and per-column scales and a bias
// (scaled) or none, in `parts` products of the same scales one after another (ScaledRows::parts),
// and its values as the kernels read them (float products of the rounded inputs).
struct RawRows {
    std::vector<float> raw;  // the products' values [parts][n, ld]: BF16-exact unless f32
    int parts = 1;
    bool f32 = false;
    std::vector<float> row_scale, col_scale, bias;
    std::vector<double> value;  // [n, ld]
};

std::vector<float> random_raw(size_t count, bool f32, std::mt19937_64& rng) {
    auto v = uniform(count, -3.0f, 3.0f, rng);
    if (!f32)
        for (float& e : v) e = bf16_to_f32(f32_to_bf16(e));
    return v;
}

RawRows make_raw(int64_t n, int64_t ld, bool scaled, int parts, bool f32, std::mt19937_64& rng) {
    RawRows r;
    r.f32 = f32;
    r.parts = parts;
    r.raw = random_raw(size_t(parts * n * ld), f32, rng);
    if (scaled) {
        r.row_scale = uniform(size_t(n), 0.01f, 0.1f, rng);
        r.col_scale = uniform(size_t(ld), 0.5f, 2.0f, rng);
        r.bias = uniform(size_t(ld), -0.5f, 0.5f, rng);
    }
    r.value.resize(size_t(n * ld));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < ld; ++j) {
            const size_t at = size_t(i * ld + j);
            float x = 0.0f;
            for (int p = 0; p < parts; ++p) x += r.raw[size_t(p * n * ld) + at];
            r.value[at] = scaled ? double(x * r.row_scale[size_t(i)] * r.col_scale[size_t(j)]) + r.bias[size_t(j)] : double(x);
        }
    return r;
}

struct DeviceRows {
    DeviceBuffer raw, row_scale, col_scale, bias;
    gpu::ProductParts parts;
    bool f32 = false;
    ScaledRows view(int64_t ld) const {
        auto or_null = [](const DeviceBuffer& b) { return b.bytes() ? b.as<float>() : nullptr; };
        return {raw.get(), ld, or_null(row_scale), or_null(col_scale), or_null(bias), parts, f32};
    }
};

// The products as the GEMMs write them: BF16 bits, or float32.
DeviceBuffer upload_products(const std::vector<float>& v, bool f32) {
    if (f32) return upload(v);
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16(v[i]);
    return upload(bits);
}

DeviceRows to_device(const RawRows& r) {
    DeviceRows d{upload_products(r.raw, r.f32), {}, {}, {}, {r.parts, int64_t(r.value.size())}, r.f32};
    if (!r.row_scale.empty()) {
        d.row_scale = upload(r.row_scale);
        d.col_scale = upload(r.col_scale);
        d.bias = upload(r.bias);
    }
    return d;
}

// Checks row r of an output [rows, width] against ref (width values): FP8 codes with their row
// scale, or BF16 values; rows past n are zeros (scale 1).
void expect_row(const std::vector<uint8_t>& out, const std::vector<float>& scales, gpu::GemmDType dtype, int64_t r, int64_t width,
                const std::vector<double>* ref, const std::string& what) {
    if (dtype == gpu::GemmDType::FP8) {
        const uint8_t* q = out.data() + r * width;
        if (!ref) {
            for (int64_t c = 0; c < width; ++c) ASSERT_EQ(q[c], 0) << what << " padding row " << r << " col " << c;
            ASSERT_EQ(scales[size_t(r)], 1.0f) << what << " padding row " << r;
            return;
        }
        double amax = 0;
        for (double v : *ref) amax = std::max(amax, std::fabs(v));
        const double s = amax / 448.0;
        ASSERT_NEAR(scales[size_t(r)], s, 1e-5 * s) << what << " row " << r;
        for (int64_t c = 0; c < width; ++c) {
            const double got = test::e4m3_decode(q[c]) * scales[size_t(r)], want = (*ref)[size_t(c)];
            ASSERT_NEAR(got, want, std::fabs(want) / 16.0 * 1.01 + s * std::ldexp(1.0, -9)) << what << " row " << r << " col " << c;
        }
        return;
    }
    const uint16_t* v = reinterpret_cast<const uint16_t*>(out.data()) + r * width;
    for (int64_t c = 0; c < width; ++c) {
        const double want = ref ? (*ref)[size_t(c)] : 0.0;
        ASSERT_NEAR(bf16_to_f32(v[c]), want, std::fabs(want) / 256.0 * 1.01 + 1e-6) << what << " row " << r << " col " << c;
    }
}

struct Case {
    int64_t n, rows;
    gpu::GemmDType out;
    bool scaled_input;
    bool f32_input = false;  // float32 GEMM products (the BF16 engine's)
    int parts = 1;           // of the added products (ScaledRows::parts)
};

TEST(GpuDecodeKernels, AddNormQuantizeMatchesReference) {
    REQUIRE_GPU();
    std::mt19937_64 rng(17);
    for (int64_t d : {64, 1004, 5120, 16388})
        for (const Case cs : {Case{5, 8, gpu::GemmDType::FP8, true, false, 3}, Case{3, 3, gpu::GemmDType::BF16, false},
                              Case{1, 16, gpu::GemmDType::FP8, false}, Case{2, 2, gpu::GemmDType::BF16, true, true, int(gpu::kMaxKParts)}})
            for (bool with_add : {true, false}) {
                const std::string what = "d=" + std::to_string(d) + " n=" + std::to_string(cs.n) + (with_add ? " add" : " no add") +
                                         (cs.out == gpu::GemmDType::FP8 ? " fp8" : " bf16") + (cs.f32_input ? " f32 products" : "") +
                                         " in " + std::to_string(cs.parts) + " parts";
                const auto x = uniform(size_t(cs.n * d), -2.0f, 2.0f, rng);
                const auto weight = uniform(size_t(d), 0.5f, 1.5f, rng);
                // Products in parts, as the MLP's down writes them (its split-K ranges, its dense region).
                const RawRows add = make_raw(cs.n, d, cs.scaled_input, cs.parts, cs.f32_input, rng);
                const DeviceRows add_dev = to_device(add);
                DeviceBuffer x_dev = upload(x), w_dev = upload(weight);
                const size_t out_bytes = size_t(cs.rows * d) * (cs.out == gpu::GemmDType::FP8 ? 1 : 2);
                DeviceBuffer out_dev(out_bytes, "out"), scale_dev(size_t(cs.rows) * 4, "scales");
                SPENSE_CUDA_CHECK(cudaMemset(out_dev.get(), 0x7f, out_bytes));
                const ActOut out{cs.out, out_dev.get(), d, scale_dev.as<float>()};
                const float eps = 1e-6f;
                gpu::launch_add_norm_quantize(x_dev.as<float>(), with_add ? add_dev.view(d) : ScaledRows{}, w_dev.as<float>(), eps, cs.n,
                                              cs.rows, d, out, nullptr);
                SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
                const auto x_got = download<float>(x_dev, x.size());
                const auto q = download<uint8_t>(out_dev, out_bytes);
                const auto scales = cs.out == gpu::GemmDType::FP8 ? download<float>(scale_dev, size_t(cs.rows)) : std::vector<float>{};
                for (int64_t r = 0; r < cs.rows; ++r) {
                    if (r >= cs.n) {
                        expect_row(q, scales, cs.out, r, d, nullptr, what);
                        continue;
                    }
                    std::vector<double> xr(static_cast<size_t>(d)), y(static_cast<size_t>(d));
                    double ss = 0;
                    for (int64_t c = 0; c < d; ++c) {
                        xr[size_t(c)] = double(x[size_t(r * d + c)]) + (with_add ? add.value[size_t(r * d + c)] : 0.0);
                        ss += xr[size_t(c)] * xr[size_t(c)];
                        ASSERT_NEAR(x_got[size_t(r * d + c)], xr[size_t(c)], 1e-6 * (1 + std::fabs(xr[size_t(c)]))) << what << " residual";
                    }
                    const double inv = 1.0 / std::sqrt(ss / double(d) + eps);
                    for (int64_t c = 0; c < d; ++c) y[size_t(c)] = xr[size_t(c)] * inv * weight[size_t(c)];
                    expect_row(q, scales, cs.out, r, d, &y, what);
                }
            }
}

TEST(GpuDecodeKernels, SwigluQuantizeMatchesReference) {
    REQUIRE_GPU();
    std::mt19937_64 rng(23);
    const std::vector<gpu::SwigluLayout> layouts = {{0, 64}, {24, 40}, {64, 0}, {19200, 6400}, {40000, 8}};
    for (const auto& L : layouts)
        for (const Case cs : {Case{5, 16, gpu::GemmDType::FP8, true}, Case{2, 2, gpu::GemmDType::BF16, false},
                              Case{3, 3, gpu::GemmDType::BF16, true, true}}) {
            const std::string what = "sparse=" + std::to_string(L.sparse) + " dense=" + std::to_string(L.dense) +
                                     (cs.out == gpu::GemmDType::FP8 ? " fp8" : " bf16") + (cs.f32_input ? " f32 products" : "");
            const int64_t width = L.z_width(), ld = L.h_width() + 8;  // h may be a block of a wider tensor
            const RawRows h = make_raw(cs.n, ld, cs.scaled_input, 1, cs.f32_input, rng);
            const DeviceRows h_dev = to_device(h);
            const size_t out_bytes = size_t(cs.rows * width) * (cs.out == gpu::GemmDType::FP8 ? 1 : 2);
            DeviceBuffer out_dev(out_bytes, "z"), scale_dev(size_t(cs.rows) * 4, "z scales");
            SPENSE_CUDA_CHECK(cudaMemset(out_dev.get(), 0x7f, out_bytes));
            gpu::launch_swiglu_quantize(h_dev.view(ld), L, cs.n, cs.rows, ActOut{cs.out, out_dev.get(), width, scale_dev.as<float>()}, nullptr);
            SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
            const auto q = download<uint8_t>(out_dev, out_bytes);
            const auto scales = cs.out == gpu::GemmDType::FP8 ? download<float>(scale_dev, size_t(cs.rows)) : std::vector<float>{};
            for (int64_t r = 0; r < cs.rows; ++r) {
                if (r >= cs.n) {
                    expect_row(q, scales, cs.out, r, width, nullptr, what);
                    continue;
                }
                std::vector<double> z(static_cast<size_t>(width));
                for (int64_t c = 0; c < width; ++c) {
                    const bool sparse = c < L.sparse;
                    const int64_t g = sparse ? c : 2 * L.sparse + (c - L.sparse), u = sparse ? L.sparse + c : 2 * L.sparse + L.dense + (c - L.sparse);
                    const double gv = h.value[size_t(r * ld + g)], uv = h.value[size_t(r * ld + u)];
                    z[size_t(c)] = gv / (1.0 + std::exp(-gv)) * uv;
                }
                expect_row(q, scales, cs.out, r, width, &z, what);
            }
        }
}

TEST(GpuDecodeKernels, TooWideRowsAreClearErrors) {
    REQUIRE_GPU();
    const ActOut out{gpu::GemmDType::FP8, nullptr, 0, nullptr};
    EXPECT_THROW(gpu::launch_add_norm_quantize(nullptr, {}, nullptr, 1e-6f, 1, 1, 98308, out, nullptr), Error);
    EXPECT_THROW(gpu::launch_add_norm_quantize(nullptr, {}, nullptr, 1e-6f, 1, 1, 66, out, nullptr), Error);
    EXPECT_THROW(gpu::launch_swiglu_quantize({}, {98304, 8}, 1, 1, out, nullptr), Error);
    EXPECT_THROW(gpu::launch_swiglu_quantize({}, {12, 4}, 1, 1, out, nullptr), Error);
}

}  // namespace
}  // namespace spense

#else

TEST(GpuDecodeKernels, BuiltWithoutCuda) { GTEST_SKIP() << "spense was built without CUDA (no nvcc at configure time)"; }

#endif
