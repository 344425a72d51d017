// The native 2:4 GEMM (src/gpu/native_sparse.h): its weight layout decoded on the CPU from PTX's
// fragment mapping (no GPU needed), and the kernel against a CPU double reference on random inputs
// of awkward sizes (N = 1, 7, 33, 1000; m odd multiples of 16; k not a multiple of any tile), for
// output-split (a column block of a wider y) and accumulate (input-split) with the per-channel
// epilogue factor, every kernel and split count, split-K ranges adding their products or (without
// accumulate) writing them apart as parts of k, summed here; outputs poisoned with NaN first and
// checked to be fully written and nothing else touched. GPU tests skip themselves where no CUDA device is present.
#include <gtest/gtest.h>

#ifdef SPENSE_HAS_CUDA

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/native_sparse.h"
#include "test_gpu.h"
#include "test_gpu_reference.h"

namespace spense {
namespace {

using gpu::DeviceBuffer;
using gpu::GemmDType;
using gpu::NativeSparseLayout;

gpu::GpuContext& context() {
    static gpu::GpuContext* ctx = new gpu::GpuContext();
    return *ctx;
}

// A random 2:4 weight [m, k] as raw element bits (BF16, or E4M3 codes) and its values: in every
// group of 4 columns 0, 1 or 2 non-zeros (mostly 2) at random positions, values +-U(0.1, 1) (E4M3:
// codes of +-U(28, 448)); the last group may be partial.
struct Weight {
    std::vector<uint8_t> bits;
    std::vector<double> value;
};
Weight random_weight(GemmDType t, int64_t m, int64_t k, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> mag(0.1f, 1.0f);
    const size_t e = gpu::gemm_dtype_bytes(t);
    Weight w;
    w.bits.assign(size_t(m * k) * e, 0);
    w.value.assign(size_t(m * k), 0.0);
    for (int64_t r = 0; r < m; ++r)
        for (int64_t c0 = 0; c0 < k; c0 += 4) {
            const int keep = int(rng() % 8 == 0 ? rng() % 2 : 2);
            int pos[4] = {0, 1, 2, 3};
            for (int i = 3; i > 0; --i) std::swap(pos[i], pos[rng() % uint64_t(i + 1)]);
            for (int i = 0; i < keep; ++i) {
                const int64_t c = c0 + pos[i];
                if (c >= k) continue;
                const float v = (rng() & 1 ? 1.0f : -1.0f) * mag(rng);
                const size_t at = size_t(r * k + c);
                if (t == GemmDType::BF16) {
                    const uint16_t b = f32_to_bf16(v);
                    w.bits[2 * at] = uint8_t(b);
                    w.bits[2 * at + 1] = uint8_t(b >> 8);
                    w.value[at] = bf16_to_f32(b);
                } else {
                    const uint8_t q = test::e4m3_encode(v * 448.0f);
                    w.bits[at] = q;
                    w.value[at] = test::e4m3_decode(q);
                }
            }
        }
    return w;
}

// The weight back from the layout, read the way the sparse tensor-core instructions read their
// fragments (CUTLASS's SM90 sparse GMMA layouts give the same per warp). Lane 4g + q, register r,
// row g + 8 (r & 1):
//   BF16 (mma.sp m16n8k32, wgmma m64nNk32): 4 k-steps of 32 columns, register r = group
//     q + 4 (r >> 1); metadata of (row half h, group c) in role p = c / 4, bits 16 h + 4 (c - 4p), on
//     lane 4g + p for k-steps 0, 1 and lane 4g + p + 2 for k-steps 2, 3 (word s % 2);
//   E4M3 (wgmma m64nNk64): 2 k-steps of 64 columns, register r = groups 2q + 8 (r >> 1) and the
//     next; metadata of (row g + 8 h, group c) in word s of lane 4g + h + 2 (c / 8), bits 4 (c % 8).
std::vector<double> decode(const NativeSparseLayout& L, const std::vector<uint8_t>& bytes) {
    const bool bf16 = L.dtype == GemmDType::BF16;
    const int steps = bf16 ? 4 : 2, step_cols = bf16 ? 32 : 64, groups_per_reg = bf16 ? 1 : 2;
    std::vector<double> w(size_t(L.m * L.k), 0.0);
    auto u32 = [&](size_t at) { return uint32_t(bytes[at]) | uint32_t(bytes[at + 1]) << 8 | uint32_t(bytes[at + 2]) << 16 | uint32_t(bytes[at + 3]) << 24; };
    for (int64_t t = 0; t < L.tiles; ++t)
        for (int64_t b = 0; b < L.k_blocks; ++b) {
            const size_t blk = size_t((t * L.k_blocks + b) * L.block_bytes());
            const size_t meta = blk + size_t(L.block_bytes() - 256);
            for (int s = 0; s < steps; ++s)
                for (int lane = 0; lane < 32; ++lane)
                    for (int r = 0; r < 4; ++r)
                        for (int i = 0; i < groups_per_reg; ++i) {
                            const int g = lane / 4, q = lane % 4, h = r & 1;
                            const int c = bf16 ? q + 4 * (r >> 1) : 2 * q + 8 * (r >> 1) + i;
                            uint32_t word;
                            int shift;
                            if (bf16) {
                                const int p = c / 4;
                                word = u32(meta + size_t((4 * g + p + (s < 2 ? 0 : 2)) * 8 + 4 * (s % 2)));
                                shift = 16 * h + 4 * (c - 4 * p);
                            } else {
                                word = u32(meta + size_t((4 * g + h + 2 * (c / 8)) * 8 + 4 * s));
                                shift = 4 * (c % 8);
                            }
                            const uint32_t nib = (word >> shift) & 0xf;
                            const int idx[2] = {int(nib & 3), int(nib >> 2)};
                            EXPECT_LT(idx[0], idx[1]) << "metadata not ordered";
                            const int64_t row = t * 16 + g + 8 * h, col = b * 128 + s * step_cols + 4 * c;
                            for (int v = 0; v < 2; ++v) {
                                const size_t at = blk + size_t(s * 512 + lane * 16 + r * 4);
                                const double x = bf16 ? bf16_to_f32(uint16_t(bytes[at + 2 * v] | bytes[at + 2 * v + 1] << 8))
                                                      : test::e4m3_decode(bytes[at + 2 * i + v]);
                                if (x == 0) continue;
                                EXPECT_TRUE(row < L.m && col + idx[v] < L.k) << "a non-zero in the padding at " << row << ", " << col + idx[v];
                                if (row < L.m && col + idx[v] < L.k) w[size_t(row * L.k + col + idx[v])] = x;
                            }
                        }
        }
    return w;
}

TEST(NativeSparseLayout, DecodesBackToTheWeightThroughPtxFragmentMapping) {
    for (GemmDType t : {GemmDType::BF16, GemmDType::FP8})
        for (auto [m, k] : {std::pair<int64_t, int64_t>{48, 200}, {16, 1030}, {80, 512}}) {
            SCOPED_TRACE(cat(gpu::gemm_dtype_name(t), " [", m, ", ", k, "]"));
            const Weight w = random_weight(t, m, k, uint64_t(m * k));
            const NativeSparseLayout L = NativeSparseLayout::make(t, m, k);
            EXPECT_EQ(L.tiles * 16, (m + 31) / 32 * 32);
            EXPECT_EQ(L.k_blocks * 128, (k + 511) / 512 * 512);
            const std::vector<double> back = decode(L, gpu::encode_native_2to4_host(L, w.bits.data()));
            EXPECT_EQ(back, w.value);
        }
}

TEST(NativeSparseLayout, RefusesAGroupWithThreeNonZeros) {
    Weight w = random_weight(GemmDType::BF16, 16, 64, 3);
    for (int c = 0; c < 3; ++c) {  // row 5, group 2: three non-zeros
        w.bits[size_t(2 * (5 * 64 + 8 + c))] = 0x80;
        w.bits[size_t(2 * (5 * 64 + 8 + c)) + 1] = 0x3f;
    }
    const NativeSparseLayout L = NativeSparseLayout::make(GemmDType::BF16, 16, 64);
    EXPECT_THROW(gpu::encode_native_2to4_host(L, w.bits.data()), Error);
}

std::vector<uint8_t> random_x(GemmDType t, int64_t n, int64_t k, int64_t ldb, uint64_t seed, std::vector<double>* value) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> mag(0.1f, 1.0f);
    const size_t e = gpu::gemm_dtype_bytes(t);
    std::vector<uint8_t> bits(size_t(n * ldb) * e, 0xff);  // NaN past k: must never be read
    value->assign(size_t(n * k), 0.0);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c) {
            const float v = (rng() & 1 ? 1.0f : -1.0f) * mag(rng);
            const size_t at = size_t(r * ldb + c);
            if (t == GemmDType::BF16) {
                const uint16_t b = f32_to_bf16(v);
                bits[2 * at] = uint8_t(b);
                bits[2 * at + 1] = uint8_t(b >> 8);
                (*value)[size_t(r * k + c)] = bf16_to_f32(b);
            } else {
                const uint8_t q = test::e4m3_encode(v * 448.0f);
                bits[at] = q;
                (*value)[size_t(r * k + c)] = test::e4m3_decode(q);
            }
        }
    return bits;
}

struct GemmCase {
    GemmDType dtype;
    int64_t m, k;
    bool accumulate;
    gpu::GemmOut out = gpu::GemmOut::BF16;
};
void PrintTo(const GemmCase& c, std::ostream* os) {
    *os << gpu::gemm_dtype_name(c.dtype) << " m=" << c.m << " k=" << c.k << (c.accumulate ? " accumulate" : "")
        << (c.out == gpu::GemmOut::F32 ? " f32 out" : "");
}

class NativeSparseGemmTest : public ::testing::TestWithParam<GemmCase> {};

// y [n, ldc] poisoned (or random, when accumulating); the GEMM writes columns [col0, col0 + m) of
// every row r < n: y = scale * (x W^T + y0); the rest of y must be untouched. BF16 outputs are
// checked to 1e-2 (their rounding); float32 ones to 1e-5 from BF16 products, 5e-4 from FP8 ones,
// which sm_90's tensor cores accumulate at reduced precision (8-9e-5 measured on the H200).
TEST_P(NativeSparseGemmTest, MatchesTheCpuReference) {
    REQUIRE_GPU();
    const GemmCase c = GetParam();
    const bool fp8 = c.dtype == GemmDType::FP8, f32 = c.out == gpu::GemmOut::F32;
    // y as raw bytes of its type: all-ones is NaN in both.
    const size_t eo = gpu::gemm_out_bytes(c.out);
    const auto y_at = [&](const std::vector<uint8_t>& y, size_t i) {
        if (f32) {
            float v;
            std::memcpy(&v, y.data() + 4 * i, 4);
            return v;
        }
        return bf16_to_f32(uint16_t(y[2 * i] | y[2 * i + 1] << 8));
    };
    const auto set_y = [&](std::vector<uint8_t>& y, size_t i, float v) {
        if (f32) {
            std::memcpy(y.data() + 4 * i, &v, 4);
        } else {
            const uint16_t b = f32_to_bf16(v);
            y[2 * i] = uint8_t(b);
            y[2 * i + 1] = uint8_t(b >> 8);
        }
    };
    const int64_t ldb = (c.k + 15) / 16 * 16 + 16, col0 = 24, ldc = c.m + 40;
    const Weight w = random_weight(c.dtype, c.m, c.k, 7);
    DeviceBuffer wd(w.bits.size(), "weight");
    wd.upload(w.bits.data(), w.bits.size());
    const int64_t max_parts = c.accumulate ? 1 : gpu::kMaxKParts;
    gpu::NativeSparseGemm gemm(context(), {c.dtype, c.m, c.k, ldb, ldc, c.accumulate, c.out, max_parts}, wd, nullptr);
    std::vector<float> scale(size_t(c.m));
    for (int64_t j = 0; j < c.m; ++j) scale[size_t(j)] = 0.5f + 0.01f * float(j % 37);
    DeviceBuffer scale_d(scale.size() * 4, "scale");
    scale_d.upload(scale.data(), scale.size() * 4);

    for (int64_t n : {1, 7, 33, 1000}) {
        std::vector<double> xv;
        const std::vector<uint8_t> xb = random_x(c.dtype, n, c.k, ldb, uint64_t(n), &xv);
        DeviceBuffer xd(xb.size(), "x");
        xd.upload(xb.data(), xb.size());
        std::mt19937_64 rng(uint64_t(n) + 99);
        std::vector<uint8_t> y0(size_t(max_parts * n * ldc) * eo, 0xff);  // NaN
        if (c.accumulate)
            for (int64_t r = 0; r < n; ++r)
                for (int64_t j = 0; j < c.m; ++j) set_y(y0, size_t(r * ldc + col0 + j), float(int64_t(rng() % 200) - 100) / 50.0f);
        std::vector<float> expect(size_t(n * c.m)), ref_raw(size_t(n * c.m));
        for (int64_t r = 0; r < n; ++r)
            for (int64_t j = 0; j < c.m; ++j) {
                double acc = 0;
                for (int64_t i = 0; i < c.k; ++i) acc += xv[size_t(r * c.k + i)] * w.value[size_t(j * c.k + i)];
                if (c.accumulate) acc += y_at(y0, size_t(r * ldc + col0 + j));
                expect[size_t(r * c.m + j)] = float(acc * (fp8 ? scale[size_t(j)] : 1.0f));
            }
        const float* sp = fp8 ? scale_d.as<float>() : nullptr;
        std::vector<gpu::NativeConfig> configs = gemm.candidates(n);
        configs.push_back({gpu::NativeKernel::Wgmma, 0});  // splits 0: run(), the searched choice
        for (const gpu::NativeConfig& config : configs) {
            const int sk = config.splits, parts = sk == 0 ? gemm.k_parts(n, nullptr) : config.k_parts();
            SCOPED_TRACE(cat(gpu::gemm_dtype_name(c.dtype), " m=", c.m, " k=", c.k, " N=", n, " accumulate=", c.accumulate, " f32 out=", f32,
                             " kernel=", gpu::native_kernel_name(config.kernel), " splits=", sk, " parts=", parts));
            DeviceBuffer yd(y0.size(), "y");
            yd.upload(y0.data(), y0.size());
            void* out = static_cast<uint8_t*>(yd.get()) + size_t(col0) * eo;
            for (int rep = 0; rep < 2; ++rep) {  // twice: the split-K workspace must come back clean
                if (rep == 1) yd.upload(y0.data(), y0.size());
                if (sk == 0)
                    gemm.run(xd.get(), out, n, sp, nullptr);
                else
                    gemm.run_with(config, xd.get(), out, n, sp, nullptr);
            }
            SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
            std::vector<uint8_t> yb(y0.size());
            yd.download(yb.data(), yb.size());
            std::vector<float> got(size_t(n * c.m), 0.0f);
            int64_t unwritten = 0, touched = 0;
            for (int64_t p = 0; p < max_parts; ++p)
                for (int64_t r = 0; r < n; ++r)
                    for (int64_t j = 0; j < ldc; ++j) {
                        const size_t at = size_t((p * n + r) * ldc + j);
                        if (p < parts && j >= col0 && j < col0 + c.m) {
                            got[size_t(r * c.m + j - col0)] += y_at(yb, at);
                            unwritten += std::isnan(y_at(yb, at));
                        } else {
                            touched += std::memcmp(yb.data() + at * eo, y0.data() + at * eo, eo) != 0;
                        }
                    }
            EXPECT_EQ(unwritten, 0) << "outputs left unwritten";
            EXPECT_EQ(touched, 0) << "columns outside the output block were written";
            const double err = test::rel_error(got, expect);
            EXPECT_LT(err, !f32 ? 1e-2 : fp8 ? 5e-4 : 1e-5);
            if (!c.accumulate && sk > 1) {
                EXPECT_EQ(parts, sk <= max_parts ? sk : 1) << "split counts up to max_k_parts write apart";
            }
            if (sk == 0) std::printf("[native-2:4] %s m=%lld k=%lld N=%lld acc=%d out=%s rel err %.2e\n", gpu::gemm_dtype_name(c.dtype),
                                     (long long)c.m, (long long)c.k, (long long)n, int(c.accumulate), f32 ? "f32" : "bf16", err);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, NativeSparseGemmTest,
                         ::testing::Values(GemmCase{GemmDType::BF16, 48, 200, false}, GemmCase{GemmDType::FP8, 48, 200, false},
                                           GemmCase{GemmDType::BF16, 272, 1500, true}, GemmCase{GemmDType::FP8, 272, 1500, true},
                                           GemmCase{GemmDType::BF16, 528, 2100, false}, GemmCase{GemmDType::FP8, 80, 2100, true},
                                           GemmCase{GemmDType::BF16, 272, 1500, true, gpu::GemmOut::F32},
                                           GemmCase{GemmDType::FP8, 80, 2100, false, gpu::GemmOut::F32}),
                         [](const ::testing::TestParamInfo<GemmCase>& info) {  // e.g. fp8_m272_k1500_accumulate_f32out
                             const GemmCase& c = info.param;
                             return cat(gpu::gemm_dtype_name(c.dtype), "_m", c.m, "_k", c.k, c.accumulate ? "_accumulate" : "",
                                        c.out == gpu::GemmOut::F32 ? "_f32out" : "");
                         });

// SparseGemm picks a valid backend per bucket (native below cuSPARSELt's 16-token granule) and its
// result matches the reference either way.
TEST(SparseGemmSelection, PicksAValidBackendAndMatches) {
    REQUIRE_GPU();
    for (GemmDType t : {GemmDType::BF16, GemmDType::FP8}) {
        const int64_t m = 256, k = 1024;
        const Weight w = random_weight(t, m, k, 11);
        DeviceBuffer wd(w.bits.size(), "weight");
        wd.upload(w.bits.data(), w.bits.size());
        gpu::GpuContext ctx;
        gpu::SparseGemm gemm(ctx, {t, m, k, k, m, false}, wd, nullptr);
        EXPECT_EQ(gemm.backend_for(7, nullptr), gpu::SparseBackend::Native);
        for (int64_t n : {7, 32, 48}) {
            SCOPED_TRACE(cat(gpu::gemm_dtype_name(t), " N=", n));
            const gpu::SparseBackend b = gemm.backend_for(n, nullptr);
            EXPECT_TRUE(b == gpu::SparseBackend::Native || (gemm.has_cusparselt() && n % 16 == 0));
            std::vector<double> xv;
            const std::vector<uint8_t> xb = random_x(t, n, k, k, uint64_t(n), &xv);
            DeviceBuffer xd(xb.size(), "x"), yd(size_t(n * m) * 2, "y");
            xd.upload(xb.data(), xb.size());
            SPENSE_CUDA_CHECK(cudaMemset(yd.get(), 0xff, yd.bytes()));
            gemm.run(xd.get(), yd.get(), n, nullptr);
            SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
            std::vector<uint16_t> yb(size_t(n * m));
            yd.download(yb.data(), yb.size() * 2);
            std::vector<float> got(yb.size()), expect(yb.size());
            for (int64_t r = 0; r < n; ++r)
                for (int64_t j = 0; j < m; ++j) {
                    double acc = 0;
                    for (int64_t i = 0; i < k; ++i) acc += xv[size_t(r * k + i)] * w.value[size_t(j * k + i)];
                    expect[size_t(r * m + j)] = float(acc);
                    got[size_t(r * m + j)] = bf16_to_f32(yb[size_t(r * m + j)]);
                }
            EXPECT_LT(test::rel_error(got, expect), 1e-2) << gpu::sparse_backend_name(b);
        }
        EXPECT_FALSE(ctx.plan_report().empty());
    }
}

// Keeping one format: the kept backend serves every later call with the same result, the other
// format's memory is gone, and a call the kept backend cannot serve is a clear error.
TEST(SparseGemmSelection, KeepingOneFormatServesLaterCalls) {
    REQUIRE_GPU();
    for (GemmDType t : {GemmDType::BF16, GemmDType::FP8}) {
        SCOPED_TRACE(gpu::gemm_dtype_name(t));
        const int64_t m = 256, k = 1024, n = 32;
        const Weight w = random_weight(t, m, k, 13);
        DeviceBuffer wd(w.bits.size(), "weight");
        wd.upload(w.bits.data(), w.bits.size());
        gpu::GpuContext ctx;
        gpu::SparseGemm gemm(ctx, {t, m, k, k, m, false}, wd, nullptr);
        std::vector<double> xv;
        const std::vector<uint8_t> xb = random_x(t, n, k, k, 5, &xv);
        DeviceBuffer xd(xb.size(), "x"), before(size_t(n * m) * 2, "y before"), after(size_t(n * m) * 2, "y after");
        xd.upload(xb.data(), xb.size());
        gemm.run(xd.get(), before.get(), n, nullptr);
        const gpu::SparseBackend kept = gemm.backend_for(n, nullptr);
        gemm.keep_backend(kept, nullptr);
        EXPECT_EQ(gemm.has_native(), kept == gpu::SparseBackend::Native);
        EXPECT_EQ(gemm.has_cusparselt(), kept == gpu::SparseBackend::CuSparseLt);
        gemm.run(xd.get(), after.get(), n, nullptr);
        SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<uint16_t> yb(size_t(n * m)), ya(size_t(n * m));
        before.download(yb.data(), yb.size() * 2);
        after.download(ya.data(), ya.size() * 2);
        EXPECT_EQ(yb, ya) << "kept " << gpu::sparse_backend_name(kept);
        if (kept == gpu::SparseBackend::CuSparseLt) {
            EXPECT_THROW(gemm.run(xd.get(), after.get(), 7, nullptr), Error);
        }
    }
}

}  // namespace
}  // namespace spense

#endif  // SPENSE_HAS_CUDA
