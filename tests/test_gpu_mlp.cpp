// The GPU Spense MLP against CPU references (test_gpu_reference.h): every operator on random inputs
// of awkward sizes (N = 1, 7, 33, 1000; k not a multiple of any tile), outputs poisoned with NaN
// first and checked to be fully written, relative Frobenius error under 1e-2 (BF16) and 5e-2
// (FP8). GPU tests skip themselves where no CUDA device is present.
#include <gtest/gtest.h>

#ifdef SPENSE_HAS_CUDA

#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/matrix.h"
#include "format/hf_writer.h"
#include "format/spense.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/spense_checkpoint.h"
#include "gpu/spense_mlp.h"
#include "model/transformer.h"
#include "prune/pipeline.h"
#include "test_gpu.h"
#include "test_gpu_reference.h"
#include "test_paths.h"

namespace spense {
namespace {

using gpu::DeviceBuffer;
using gpu::GemmDType;
using gpu::GpuContext;
using gpu::GpuMlpOptions;
using gpu::GpuSpenseMlp;
using gpu::MlpPlan;
using gpu::SparseBackend;
using gpu::SparseRun;
using gpu::SpenseMlpLayout;

// One context for the whole test process, so that plans are shared as in real use. Never
// destroyed: the CUDA runtime may be gone by the time static destructors run.
GpuContext& context() {
    static GpuContext* ctx = new GpuContext();
    return *ctx;
}

DeviceBuffer poisoned(size_t bytes) {  // 0xff bytes: NaN in BF16 and in E4M3
    DeviceBuffer b(bytes, "test buffer");
    SPENSE_CUDA_CHECK(cudaMemset(b.get(), 0xff, bytes));
    return b;
}

template <typename T>
std::vector<T> download(const DeviceBuffer& b, size_t count) {
    SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> out(count);
    b.download(out.data(), count * sizeof(T));
    return out;
}

// Random BF16 activations +-U(0.1, 1): no accidental zeros.
std::vector<uint16_t> random_bf16(size_t count, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> mag(0.1f, 1.0f);
    std::vector<uint16_t> out(count);
    for (auto& v : out) v = f32_to_bf16((rng() & 1) ? mag(rng) : -mag(rng));
    return out;
}

std::vector<float> to_float(const std::vector<uint16_t>& b) {
    std::vector<float> out(b.size());
    for (size_t i = 0; i < b.size(); ++i) out[i] = bf16_to_f32(b[i]);
    return out;
}

// The weights each dtype computes with: BF16-rounded, or FP8 quantized per row (the rows of gate
// and up; the rows of down over both regions, spense_mlp.h).
SpenseMlpWeights effective(const SpenseMlpWeights& w, GemmDType t) {
    SpenseMlpWeights e = w;
    if (t == GemmDType::BF16) {
        for (Matrix* m : {&e.gate, &e.up, &e.down})
            for (float& v : m->data) v = test::bf16_round(v);
        return e;
    }
    test::quantize_rows(e.gate, 0, e.hidden());
    test::quantize_rows(e.up, 0, e.hidden());
    test::quantize_rows(e.down, 0, e.d_ff());
    return e;
}

// out [n, rows(w)] = x [n, cols] w^T, by BLAS in float (exact enough for these tolerances).
std::vector<float> linear(const std::vector<float>& x, int64_t n, const Matrix& w) {
    std::vector<float> out(size_t(n * w.rows));
    gemm_nt(n, w.rows, w.cols, 1.0f, x.data(), w.cols, w.data.data(), w.cols, 0.0f, out.data(), w.rows);
    return out;
}

std::vector<float> swiglu(const std::vector<float>& g, const std::vector<float>& u) {
    std::vector<float> z(g.size());
    for (size_t i = 0; i < g.size(); ++i) z[i] = float(test::silu_times(g[i], u[i]));
    return z;
}

// The whole MLP as the GPU defines it (spense_mlp.h), from x's BF16 values.
struct Reference {
    std::vector<float> y;
    float x_scale = 1, z_scale = 1;
};
Reference reference_mlp(const SpenseMlpWeights& we, const std::vector<float>& x, int64_t n, const GpuMlpOptions& opt) {
    Reference r;
    std::vector<float> xe = x;
    if (opt.dtype == GemmDType::FP8) {
        r.x_scale = opt.dynamic_scales ? test::tensor_scale(x) : opt.x_scale;
        xe = test::quantize_tensor(x, r.x_scale);
    }
    std::vector<float> g = linear(xe, n, we.gate), u = linear(xe, n, we.up);
    for (auto* v : {&g, &u})
        for (float& e : *v) e = test::bf16_round(e);  // h is BF16
    std::vector<float> z = swiglu(g, u);
    if (opt.dtype == GemmDType::FP8) {
        r.z_scale = opt.dynamic_scales ? test::tensor_scale(z) : opt.z_scale;
        z = test::quantize_tensor(z, r.z_scale);
    } else {
        for (float& e : z) e = test::bf16_round(e);
    }
    r.y = linear(z, n, we.down);
    return r;
}

// Counts NaN elements (unwritten: the buffers start as NaN) of a BF16 [rows, cols] block.
int64_t nan_count(const std::vector<uint16_t>& b, int64_t row0, int64_t row1, int64_t cols) {
    int64_t c = 0;
    for (int64_t i = row0 * cols; i < row1 * cols; ++i) c += std::isnan(bf16_to_f32(b[size_t(i)]));
    return c;
}

struct Case {
    int64_t hidden, d_ff, dense;
    const char* what;
};

struct Mode {
    GemmDType dtype;
    bool dynamic;
    const char* name;
};

const Case kCases[] = {
    {64, 200, 36, "k=36 of d_ff=200 (not a multiple of any tile)"},
    {96, 200, 0, "plain 2:4 (k=0)"},
    {64, 200, 200, "plain dense (k=d_ff)"},
    {128, 384, 128, "aligned k=128"},
    {32, 72, 68, "a 4-wide sparse region"},
    // One row group of down over a long k: its 2:4 GEMM splits k, writing the parts apart (gemm.h).
    {64, 4096, 1024, "a long 2:4 region beside a dense one"},
    {64, 3072, 0, "a long plain 2:4 region"},
};
const Mode kModes[] = {{GemmDType::BF16, true, "bf16"}, {GemmDType::FP8, true, "fp8-dynamic"}, {GemmDType::FP8, false, "fp8-static"}};
const int64_t kTokens[] = {1, 7, 33, 1000};

// Makes the first of g's candidates for n that writes `parts` parts of k apart (gemm.h) the one
// its runs use; false if it has none.
bool prefer_k_parts(const gpu::DenseGemm& g, int64_t n, int parts) {
    for (int i = 0; i < g.candidates(n, nullptr); ++i) {
        g.prefer(i, n, nullptr);
        if (g.k_parts(n, nullptr) == parts) return true;
    }
    return false;
}

class GpuMlpOperators : public ::testing::TestWithParam<std::tuple<int, int>> {};

// Each operator on its own, fed the GPU's own previous output (so each comparison isolates one
// operator), then the whole forward pass against the reference pipeline.
TEST_P(GpuMlpOperators, MatchTheCpuReference) {
    REQUIRE_GPU();
    const Case& c = kCases[std::get<0>(GetParam())];
    const Mode& mode = kModes[std::get<1>(GetParam())];
    const bool fp8 = mode.dtype == GemmDType::FP8;
    const double tol = fp8 ? 5e-2 : 1e-2;
    const SpenseMlpWeights w = random_spense_mlp(c.hidden, c.d_ff, c.dense, 11);
    const SpenseMlpWeights we = effective(w, mode.dtype);
    const int64_t d = c.hidden, f = c.d_ff;
    for (int64_t n : kTokens) {
        SCOPED_TRACE(cat(c.what, ", ", mode.name, ", N=", n));
        const std::vector<uint16_t> x_bits = random_bf16(size_t(n * d), uint64_t(n) * 7 + 1);
        const std::vector<float> x = to_float(x_bits);
        GpuMlpOptions opt;
        opt.dtype = mode.dtype;
        opt.dynamic_scales = mode.dynamic;
        if (!mode.dynamic) {  // static scales as if calibrated on other data: 1.25x this input's
            const Reference dyn = reference_mlp(we, x, n, {mode.dtype, true, 1, 1});
            opt.x_scale = 1.25f * dyn.x_scale;
            opt.z_scale = 1.25f * dyn.z_scale;
        }
        GpuSpenseMlp mlp = GpuSpenseMlp::upload(context(), w, opt, nullptr);
        const SpenseMlpLayout& L = mlp.layout();
        // A dense region alone may write k's halves apart: both forms, whichever its search picks.
        if (const gpu::DenseGemm* g = mlp.down_dense(); g && g->shape().max_k_parts > 1) {
            const int parts = n == 7 || n == 1000 ? 2 : 1;
            ASSERT_TRUE(prefer_k_parts(*g, n, parts)) << "no candidate of down's dense region in " << parts << " parts of k";
        }
        // Each 2:4 GEMM's run: quantize and gate_up pad to r_gu, activate and down to r_dn. As
        // planned, except that two token counts take the two mixes of a padded GEMM (cuSPARSELt
        // where it holds the weight) and an unpadded one (ours), which the plan picks by timing.
        const int64_t padded = gpu::SparseGemm::padded_rows(n);
        const auto padded_run = [&](const gpu::SparseGemm* g) {
            return SparseRun{padded, g && g->has_cusparselt() ? SparseBackend::CuSparseLt : SparseBackend::Native};
        };
        const SparseRun unpadded{n, SparseBackend::Native};
        const MlpPlan plan = n == 7    ? MlpPlan{padded_run(mlp.gate_up_sparse()), unpadded}
                             : n == 33 ? MlpPlan{unpadded, padded_run(mlp.down_sparse())}
                                       : mlp.plan_for(n, nullptr);
        const int64_t rows = plan.max_rows(), r_gu = plan.gate_up.rows, r_dn = plan.down.rows, hw = 2 * L.width(), zw = L.width();
        const size_t e = fp8 ? 1 : 2;

        DeviceBuffer xd(size_t(n * d) * 2, "x");
        xd.upload(x_bits.data(), x_bits.size() * 2);
        DeviceBuffer xq = poisoned(size_t(rows * d) * e), h = poisoned(size_t(rows * hw) * 2), z = poisoned(size_t(rows * zw) * e),
                     y = poisoned(size_t(rows * d) * 2);

        // quantize: FP8 codes and scale exactly as the reference; BF16 a copy; padding rows zero.
        mlp.quantize(xd.as<gpu::bf16>(), xq.get(), n, r_gu, nullptr);
        std::vector<float> xe(size_t(n * d));
        if (fp8) {
            const auto codes = download<uint8_t>(xq, size_t(r_gu * d));
            const float sx = mlp.last_scales(nullptr).first;
            std::vector<uint8_t> ref_codes;
            EXPECT_EQ(sx, opt.dynamic_scales ? test::tensor_scale(x) : opt.x_scale);
            test::quantize_tensor(x, sx, &ref_codes);
            int64_t mismatches = 0, pad = 0;
            for (int64_t i = 0; i < r_gu * d; ++i) {
                if (i < n * d) mismatches += codes[size_t(i)] != ref_codes[size_t(i)];
                else pad += codes[size_t(i)] != 0;
            }
            EXPECT_EQ(mismatches, 0) << "FP8 codes of x";
            EXPECT_EQ(pad, 0) << "padding rows of the quantized x";
            for (int64_t i = 0; i < n * d; ++i) xe[size_t(i)] = test::e4m3_decode(codes[size_t(i)]) * sx;
        } else {
            const auto copy = download<uint16_t>(xq, size_t(r_gu * d));
            EXPECT_TRUE(std::equal(x_bits.begin(), x_bits.end(), copy.begin()));
            EXPECT_EQ(nan_count(copy, n, r_gu, d), 0) << "padding rows of the staged x";
            xe = x;
        }

        // gate_up (output-split): gate and up of every index where the activation reads them. FP8:
        // raw products, times the column factors the activation applies.
        mlp.gate_up(xq.get(), h.as<gpu::bf16>(), n, plan.gate_up, nullptr);
        const auto hb = download<uint16_t>(h, size_t(r_gu * hw));
        EXPECT_EQ(nan_count(hb, 0, n, hw), 0) << "gate_up left outputs unwritten";
        std::vector<float> column_scale(size_t(hw), 1.0f);
        if (const float* cs = mlp.gate_up_column_scale())
            SPENSE_CUDA_CHECK(cudaMemcpy(column_scale.data(), cs, size_t(hw) * 4, cudaMemcpyDeviceToHost));
        std::vector<float> g(size_t(n * f)), u(size_t(n * f));
        for (int64_t r = 0; r < n; ++r)
            for (int64_t i = 0; i < f; ++i) {
                const int64_t gc = L.gate_column(i), uc = L.up_column(i);
                g[size_t(r * f + i)] = bf16_to_f32(hb[size_t(r * hw + gc)]) * column_scale[size_t(gc)];
                u[size_t(r * f + i)] = bf16_to_f32(hb[size_t(r * hw + uc)]) * column_scale[size_t(uc)];
            }
        const double err_gate = test::rel_error(g, linear(xe, n, we.gate)), err_up = test::rel_error(u, linear(xe, n, we.up));
        EXPECT_LT(err_gate, 1e-2);
        EXPECT_LT(err_up, 1e-2);

        // activate: z = silu(gate) * up from the GPU's h; padding rows zero.
        mlp.activate(h.as<gpu::bf16>(), z.get(), n, r_dn, nullptr);
        const std::vector<float> z_ref = swiglu(g, u);
        std::vector<float> zg(size_t(n * f));
        float sz = 1;
        int64_t z_unwritten = 0;
        if (fp8) {
            const auto codes = download<uint8_t>(z, size_t(r_dn * zw));
            sz = mlp.last_scales(nullptr).second;
            const float sz_ref = opt.dynamic_scales ? test::tensor_scale(z_ref) : opt.z_scale;
            EXPECT_NEAR(sz, sz_ref, 1e-3 * sz_ref);
            for (int64_t i = 0; i < r_dn * zw; ++i) z_unwritten += std::isnan(test::e4m3_decode(codes[size_t(i)]));
            for (int64_t i = n * zw; i < r_dn * zw; ++i) EXPECT_EQ(codes[size_t(i)], 0) << "padding row of z";
            for (int64_t r = 0; r < n; ++r)
                for (int64_t i = 0; i < f; ++i) zg[size_t(r * f + i)] = test::e4m3_decode(codes[size_t(r * zw + L.z_column(i))]) * sz;
        } else {
            const auto zb = download<uint16_t>(z, size_t(r_dn * zw));
            z_unwritten = nan_count(zb, 0, r_dn, zw);
            for (int64_t r = 0; r < n; ++r)
                for (int64_t i = 0; i < f; ++i) zg[size_t(r * f + i)] = bf16_to_f32(zb[size_t(r * zw + L.z_column(i))]);
        }
        EXPECT_EQ(z_unwritten, 0) << "activate left outputs unwritten";
        const double err_act = test::rel_error(zg, z_ref);
        EXPECT_LT(err_act, tol);

        // down (input-split): the two regions' GEMMs side by side, then the pass that adds them.
        mlp.down(z.get(), y.as<gpu::bf16>(), n, plan.down, nullptr);
        const auto yb = download<uint16_t>(y, size_t(r_dn * d));
        EXPECT_EQ(nan_count(yb, 0, n, d), 0) << "down left outputs unwritten";
        const double err_down = test::rel_error(to_float(std::vector<uint16_t>(yb.begin(), yb.begin() + n * d)), linear(zg, n, we.down));
        EXPECT_LT(err_down, 1e-2);

        // forward: into a buffer 3 rows longer than n, whose extra rows must stay untouched.
        DeviceBuffer yf = poisoned(size_t((n + 3) * d) * 2);
        mlp.forward(xd.as<gpu::bf16>(), yf.as<gpu::bf16>(), n, nullptr);
        const auto fb = download<uint16_t>(yf, size_t((n + 3) * d));
        EXPECT_EQ(nan_count(fb, 0, n, d), 0) << "forward left outputs unwritten";
        EXPECT_EQ(nan_count(fb, n, n + 3, d), 3 * d) << "forward wrote past its n rows";
        const std::vector<float> yg = to_float(std::vector<uint16_t>(fb.begin(), fb.begin() + n * d));
        const double err_fwd = test::rel_error(yg, reference_mlp(we, x, n, opt).y);
        EXPECT_LT(err_fwd, tol);
        // Against the unrounded float MLP too: what the precision costs end to end.
        Matrix xm(n, d, x), ym;
        DenseMlp(w.gate, w.up, w.down).forward(xm, ym);
        const double err_exact = test::rel_error(yg, ym.data);
        if (!fp8) {
            EXPECT_LT(err_exact, 1e-2);
        }
        std::printf("[gpu-error] %-12s %-48s N=%-5lld gate %.2e up %.2e act %.2e down %.2e forward %.2e vs-float-mlp %.2e\n", mode.name,
                    c.what, (long long)n, err_gate, err_up, err_act, err_down, err_fwd, err_exact);
    }
}

INSTANTIATE_TEST_SUITE_P(CasesAndModes, GpuMlpOperators,
                         ::testing::Combine(::testing::Range(0, int(std::size(kCases))), ::testing::Range(0, int(std::size(kModes)))));

// Float32 GEMM outputs (the BF16 decode engine's): gate_up and down_products, the path the engine
// runs, agree with the reference to float32 accumulation (the inputs are exact), with both regions
// and with one, the products summed over down_parts as the engine's norm does; the operators that
// read BF16 outputs refuse such an MLP.
TEST(GpuMlp, Float32OutputsMatchTheReferenceToFloatPrecision) {
    REQUIRE_GPU();
    for (const Case& c : {kCases[0], kCases[1], kCases[2], kCases[5], kCases[6]}) {
        const SpenseMlpWeights w = random_spense_mlp(c.hidden, c.d_ff, c.dense, 13);
        const SpenseMlpWeights we = effective(w, GemmDType::BF16);
        GpuMlpOptions opt;
        opt.gemm_out = gpu::GemmOut::F32;
        GpuSpenseMlp mlp = GpuSpenseMlp::upload(context(), w, opt, nullptr);
        const SpenseMlpLayout& L = mlp.layout();
        const int64_t d = c.hidden, f = c.d_ff, hw = 2 * L.width(), zw = L.width();
        for (int64_t n : {1, 33}) {
            SCOPED_TRACE(cat(c.what, ", N=", n));
            const MlpPlan plan = mlp.plan_for(n, nullptr);
            EXPECT_EQ(plan.max_rows(), n) << "float32 outputs run our 2:4 kernel, which needs no padding";
            const std::vector<uint16_t> x_bits = random_bf16(size_t(n * d), uint64_t(n) + 3);
            DeviceBuffer xd(x_bits.size() * 2, "x");
            xd.upload(x_bits.data(), x_bits.size() * 2);
            DeviceBuffer h = poisoned(size_t(n * hw) * 4);
            mlp.gate_up(xd.get(), h.get(), n, plan.gate_up, nullptr);
            const auto hf = download<float>(h, size_t(n * hw));
            std::vector<float> g(size_t(n * f)), u(size_t(n * f));
            for (int64_t r = 0; r < n; ++r)
                for (int64_t i = 0; i < f; ++i) {
                    g[size_t(r * f + i)] = hf[size_t(r * hw + L.gate_column(i))];
                    u[size_t(r * f + i)] = hf[size_t(r * hw + L.up_column(i))];
                }
            const std::vector<float> x = to_float(x_bits);
            EXPECT_LT(test::rel_error(g, linear(x, n, we.gate)), 1e-5);
            EXPECT_LT(test::rel_error(u, linear(x, n, we.up)), 1e-5);

            // z in the layout's columns (zero in the padding), y = the sum of the two regions' products.
            const std::vector<uint16_t> zi = random_bf16(size_t(n * f), uint64_t(n) + 5);
            std::vector<uint16_t> z_bits(size_t(n * zw), 0);
            for (int64_t r = 0; r < n; ++r)
                for (int64_t i = 0; i < f; ++i) z_bits[size_t(r * zw + L.z_column(i))] = zi[size_t(r * f + i)];
            DeviceBuffer zd(z_bits.size() * 2, "z");
            zd.upload(z_bits.data(), z_bits.size() * 2);
            for (int parts : {1, 2}) {
                if (const gpu::DenseGemm* g = mlp.down_dense(); g && !mlp.has_both_regions())
                    ASSERT_TRUE(prefer_k_parts(*g, n, parts)) << "no candidate of the dense down in " << parts << " parts of k";
                else if (parts == 2)
                    continue;
                DeviceBuffer y = poisoned(size_t(mlp.down_out_elements(n)) * 4);
                mlp.down_products(zd.get(), y.get(), n, plan.down, nullptr);
                const gpu::ProductParts written = mlp.down_parts(n, plan.down, nullptr);
                const std::vector<float> all = download<float>(y, size_t(mlp.down_out_elements(n)));
                std::vector<float> yf(size_t(n * d), 0.0f);
                for (int p = 0; p < written.count; ++p)
                    for (size_t i = 0; i < yf.size(); ++i) yf[i] += all[size_t(p * written.stride) + i];
                std::printf("[gpu-mlp] %s N=%lld: down in %d products\n", c.what, (long long)n, written.count);
                EXPECT_LT(test::rel_error(yf, linear(to_float(zi), n, we.down)), 1e-5) << parts << " parts of k, " << written.count << " products";
            }
        }
        DeviceBuffer x1(size_t(d) * 2, "x"), y1(size_t(d) * 2, "y");
        EXPECT_THROW(mlp.forward(x1.as<gpu::bf16>(), y1.as<gpu::bf16>(), 1, nullptr), Error);
    }
}

// Large token counts (prefill sizes) take the same paths: the whole MLP at N = 16384 and 4097.
TEST(GpuMlp, LargeTokenCountsMatchTheReference) {
    REQUIRE_GPU();
    const SpenseMlpWeights w = random_spense_mlp(256, 512, 128, 5);
    for (const Mode& mode : {kModes[0], kModes[1]})
        for (int64_t n : {16384, 4097}) {
            SCOPED_TRACE(cat(mode.name, ", N=", n));
            GpuMlpOptions opt;
            opt.dtype = mode.dtype;
            GpuSpenseMlp mlp = GpuSpenseMlp::upload(context(), w, opt, nullptr);
            const auto x_bits = random_bf16(size_t(n * 256), uint64_t(n));
            DeviceBuffer xd(x_bits.size() * 2, "x");
            xd.upload(x_bits.data(), x_bits.size() * 2);
            DeviceBuffer y = poisoned(x_bits.size() * 2);
            mlp.forward(xd.as<gpu::bf16>(), y.as<gpu::bf16>(), n, nullptr);
            const auto yb = download<uint16_t>(y, x_bits.size());
            EXPECT_EQ(nan_count(yb, 0, n, 256), 0);
            const double err = test::rel_error(to_float(yb), reference_mlp(effective(w, mode.dtype), to_float(x_bits), n, opt).y);
            EXPECT_LT(err, mode.dtype == GemmDType::FP8 ? 5e-2 : 1e-2);
            std::printf("[gpu-error] %-12s large N=%-5lld forward %.2e\n", mode.name, (long long)n, err);
        }
}

// Plans are searched once per (shape, token bucket) and built once per (shape, N); the MLP's plan
// (its 2:4 backends) is chosen once per token bucket, by running the MLP at the bucket's size.
TEST(GpuMlp, PlansAreBuiltOncePerShapeAndSearchedOncePerBucket) {
    REQUIRE_GPU();
    GpuContext ctx;
    GpuSpenseMlp mlp = GpuSpenseMlp::upload(ctx, random_spense_mlp(64, 160, 32, 3), {}, nullptr);
    const auto x = random_bf16(size_t(64 * 64), 1);
    DeviceBuffer xd(x.size() * 2, "x"), y(x.size() * 2, "y");
    xd.upload(x.data(), x.size() * 2);
    mlp.forward(xd.as<gpu::bf16>(), y.as<gpu::bf16>(), 33, nullptr);
    const auto first = ctx.stats();
#ifdef SPENSE_HAS_CUSPARSELT
    // Bucket 64: the dense searches (gate_up, down), and for both 2:4 GEMMs the native and the
    // cuSPARSELt search. Plans: those of the timed runs at 64 tokens, then of the chosen ones at
    // N = 33.
    EXPECT_EQ(first.searches, 6);
    EXPECT_GE(first.plans, 4);
    const size_t reported = 7;  // the searches' choices and the MLP's plan
#else
    EXPECT_EQ(first.searches, 4);  // dense and native, gate_up and down
    EXPECT_EQ(first.plans, 2);
    const size_t reported = 5;
#endif
    mlp.forward(xd.as<gpu::bf16>(), y.as<gpu::bf16>(), 33, nullptr);
    EXPECT_EQ(ctx.stats().searches, first.searches);
    EXPECT_EQ(ctx.stats().plans, first.plans);
    // N = 40: the same bucket (64) and the same padded rows (48) for the 2:4 GEMMs; new dense plans.
    mlp.forward(xd.as<gpu::bf16>(), y.as<gpu::bf16>(), 40, nullptr);
    EXPECT_EQ(ctx.stats().searches, first.searches);
    EXPECT_EQ(ctx.stats().plans, first.plans + 2);
    // Besides, one entry per built library plan (whether it takes programmatic edges).
    const nlohmann::json report = ctx.plan_report();
    const auto plans = std::count_if(report.begin(), report.end(), [](const nlohmann::json& e) {
        return e["backend"].get<std::string>().ends_with(" plan") && e.contains("programmatic");
    });
    EXPECT_EQ(plans, ctx.stats().plans) << report.dump(1);
    EXPECT_EQ(report.size() - size_t(plans), reported) << report.dump(1);
}

// The plan's runs are ones the MLP can serve (our kernel on n rows, cuSPARSELt on n padded to 16),
// and an MLP that keeps only the planned formats serves later calls with the same results.
TEST(GpuMlp, PlanIsServableAndKeepingItsFormatsChangesNothing) {
    REQUIRE_GPU();
    for (GemmDType t : {GemmDType::BF16, GemmDType::FP8}) {
        SCOPED_TRACE(gpu::gemm_dtype_name(t));
        GpuContext ctx;
        GpuMlpOptions opt;
        opt.dtype = t;
        GpuSpenseMlp mlp = GpuSpenseMlp::upload(ctx, random_spense_mlp(64, 256, 64, 9), opt, nullptr);
        for (int64_t n : {1, 7, 32}) {
            const MlpPlan plan = mlp.plan_for(n, nullptr);
            for (const auto& [run, gemm] : {std::pair{plan.gate_up, mlp.gate_up_sparse()}, std::pair{plan.down, mlp.down_sparse()}}) {
                SCOPED_TRACE(cat("N=", n, " ", gpu::sparse_backend_name(run.backend)));
                ASSERT_NE(gemm, nullptr);
                EXPECT_EQ(run.rows, run.backend == SparseBackend::Native ? n : gpu::SparseGemm::padded_rows(n));
                EXPECT_TRUE(run.backend == SparseBackend::Native || gemm->has_cusparselt());
            }
        }
        const int64_t n = 7;
        const auto x = random_bf16(size_t(n * 64), 2);
        DeviceBuffer xd(x.size() * 2, "x"), before(x.size() * 2, "y before"), after(x.size() * 2, "y after");
        xd.upload(x.data(), x.size() * 2);
        mlp.forward(xd.as<gpu::bf16>(), before.as<gpu::bf16>(), n, nullptr);
        mlp.keep_sparse_backends_for(n, nullptr);
        const MlpPlan plan = mlp.plan_for(n, nullptr);
        EXPECT_EQ(mlp.gate_up_sparse()->has_native(), plan.gate_up.backend == SparseBackend::Native);
        EXPECT_EQ(mlp.down_sparse()->has_cusparselt(), plan.down.backend == SparseBackend::CuSparseLt);
        mlp.forward(xd.as<gpu::bf16>(), after.as<gpu::bf16>(), n, nullptr);
        EXPECT_EQ(download<uint16_t>(before, x.size()), download<uint16_t>(after, x.size()));
    }
}

// The plans a decode engine chooses among by whole steps: plan_for's choice first, each one served
// (our kernel on n rows, cuSPARSELt on n padded to 16) and matching the reference once preferred
// (by this MLP only: another of its shape keeps the choice of the MLP alone), and none preferred
// whose 2:4 format was freed.
TEST(GpuMlp, EveryPlanCandidateServesOncePreferred) {
    REQUIRE_GPU();
    const SpenseMlpWeights w = random_spense_mlp(64, 256, 64, 11);
    for (const Mode& mode : {kModes[0], kModes[1]}) {
        SCOPED_TRACE(mode.name);
        GpuContext ctx;
        GpuMlpOptions opt;
        opt.dtype = mode.dtype;
        GpuSpenseMlp mlp = GpuSpenseMlp::upload(ctx, w, opt, nullptr), other = GpuSpenseMlp::upload(ctx, w, opt, nullptr);
        const int64_t n = 7;
        const std::vector<MlpPlan> plans = mlp.plan_candidates(n, nullptr);
#ifdef SPENSE_HAS_CUSPARSELT
        EXPECT_EQ(plans.size(), 4u);  // native or cuSPARSELt, for gate_up and down
#else
        EXPECT_EQ(plans.size(), 1u);
#endif
        EXPECT_EQ(plans.front().gate_up.backend, mlp.plan_for(n, nullptr).gate_up.backend);
        EXPECT_EQ(plans.front().down.backend, mlp.plan_for(n, nullptr).down.backend);
        const auto x_bits = random_bf16(size_t(n * 64), 4);
        DeviceBuffer xd(x_bits.size() * 2, "x");
        xd.upload(x_bits.data(), x_bits.size() * 2);
        const std::vector<float> want = reference_mlp(effective(w, mode.dtype), to_float(x_bits), n, opt).y;
        for (size_t i = 0; i < plans.size(); ++i) {
            SCOPED_TRACE(cat("gate_up ", gpu::sparse_backend_name(plans[i].gate_up.backend), ", down ",
                             gpu::sparse_backend_name(plans[i].down.backend)));
            mlp.prefer_plan(n, i, nullptr);
            const MlpPlan p = mlp.plan_for(n, nullptr);
            EXPECT_EQ(p.gate_up.backend, plans[i].gate_up.backend);
            EXPECT_EQ(p.down.backend, plans[i].down.backend);
            EXPECT_EQ(p.max_rows(), plans[i].max_rows());
            EXPECT_EQ(other.plan_for(n, nullptr).gate_up.backend, plans.front().gate_up.backend);
            EXPECT_EQ(other.plan_for(n, nullptr).down.backend, plans.front().down.backend);
            DeviceBuffer y = poisoned(x_bits.size() * 2);
            mlp.forward(xd.as<gpu::bf16>(), y.as<gpu::bf16>(), n, nullptr);
            const auto yb = download<uint16_t>(y, x_bits.size());
            EXPECT_EQ(nan_count(yb, 0, n, 64), 0);
            EXPECT_LT(test::rel_error(to_float(yb), want), mode.dtype == GemmDType::FP8 ? 5e-2 : 1e-2);
        }
        EXPECT_THROW(mlp.prefer_plan(n, plans.size(), nullptr), Error);
        mlp.keep_sparse_backends_for(n, nullptr);
        for (size_t i = 0; i + 1 < plans.size(); ++i) EXPECT_THROW(mlp.prefer_plan(n, i, nullptr), Error) << i;  // the last one is kept
    }
}

// Shapes the libraries cannot take fail with the constraint named (CPU-side checks).
TEST(GpuMlp, UnsupportedShapesAreRefusedWithTheConstraint) {
    try {
        SpenseMlpLayout::make(48, 96, 32);
        ADD_FAILURE() << "hidden 48 accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("multiple of 32"), std::string::npos) << e.what();
    }
    EXPECT_THROW(SpenseMlpLayout::make(64, 96, 30), Error);  // sparse region of 66: not whole groups of 4
    EXPECT_THROW(SpenseMlpLayout::make(64, 96, 97), Error);
    const SpenseMlpLayout l = SpenseMlpLayout::make(64, 200, 36);
    EXPECT_EQ(l.sparse_padded, 192);
    EXPECT_EQ(l.dense_padded, 64);
    EXPECT_EQ(l.z_column(163), 163);
    EXPECT_EQ(l.z_column(164), 192);
    EXPECT_EQ(l.up_column(164), 2 * 192 + 64);
}

TEST(GpuMlp, WeightsThatAreNot2to4AreRefused) {
    REQUIRE_GPU();
    SpenseMlpWeights w = random_spense_mlp(64, 96, 32, 4);
    w.gate(0, 1) = w.gate(0, 0) = w.gate(0, 2) = 0.5f;  // 3 non-zeros in the first group of row 0
    EXPECT_THROW(GpuSpenseMlp::upload(context(), w, {}, nullptr), Error);
    // The same caught on the device by cuSPARSELt when a GEMM is built from a bad weight directly.
    std::vector<uint16_t> bad(size_t(32 * 64), f32_to_bf16(1.0f));
    DeviceBuffer wd(bad.size() * 2, "weight");
    wd.upload(bad.data(), bad.size() * 2);
    try {
        gpu::SparseGemm(context(), {GemmDType::BF16, 32, 64, 64, 32, false}, wd, nullptr);
        ADD_FAILURE() << "a dense weight was accepted as 2:4";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("not 2:4"), std::string::npos) << e.what();
    }
}

// Our E4M3 reference agrees with CUDA's host conversion on every BF16 value at several scales.
TEST(GpuReference, E4m3MatchesCudaConversion) {
    for (int b = 0; b < 256; ++b) {
        const __half_raw hr = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(b), __NV_E4M3);
        const float cuda = __half2float(__half(hr)), ours = test::e4m3_decode(uint8_t(b));
        if (std::isnan(cuda)) {
            EXPECT_TRUE(std::isnan(ours)) << b;
        } else {
            EXPECT_EQ(cuda, ours) << b;
        }
    }
    int64_t mismatches = 0;
    for (float scale : {1.0f, 1.0f / 3.7f, 300.0f})
        for (uint32_t bits = 0; bits < 65536; ++bits) {
            const float v = bf16_to_f32(uint16_t(bits)) * scale;
            if (std::isnan(v)) continue;
            mismatches += test::e4m3_encode(v) != __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
        }
    EXPECT_EQ(mismatches, 0);
}

// A checkpoint pruned and written by the pruning pipeline loads into the runtime layout (CPU), and
// runs on the GPU as the CPU MLP does.
TEST(GpuMlp, PrunedCheckpointLoadsAndRuns) {
    Checkpoint src = open_checkpoint(test::fixtures_dir() / "models" / "qwen3_untied");
    Transformer model = load_transformer(src);
    PruneOptions po;
    po.method = PruneMethod::SpenseGpt;
    po.sparsity = 0.375;  // rho = 0.25: k = 24 of d_ff = 96
    po.align = 8;
    CalibrationSet calib;
    std::mt19937_64 rng(9);
    for (int s = 0; s < 3; ++s) {
        calib.samples.emplace_back(24);
        for (auto& t : calib.samples.back()) t = int32_t(rng() % uint64_t(model.config().vocab));
    }
    calib.stream_tokens = 72;
    const PruneReport report = prune_model(model, calib, po);
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : report.layers)
        layers.push_back({{"dense", l.dense}, {"dense_region", {model.config().intermediate - l.dense, model.config().intermediate}}});
    const auto dir = test::temp_dir("gpu-ckpt") / "pruned";
    write_hf_checkpoint(dir, src, model, DType::F32, {{"format", "spense"}, {"layers", layers}});
    const Checkpoint ckpt = open_checkpoint(dir);
    for (int64_t l = 0; l < model.config().n_layers; ++l) {
        const SpenseMlpWeights w = gpu::load_spense_mlp(ckpt, l);
        EXPECT_EQ(w.dense, 24);
        const auto& mlp = dynamic_cast<const DenseMlp&>(*model.weights().layers[size_t(l)].mlp);
        EXPECT_EQ(w.gate.data, mlp.gate.data);
        EXPECT_EQ(w.down.data, mlp.down.data);
        if (!gpu::cuda_device_available()) continue;
        GpuSpenseMlp g = GpuSpenseMlp::upload(context(), w, {}, nullptr);
        const int64_t n = 5, d = w.hidden();
        const auto x_bits = random_bf16(size_t(n * d), 3);
        DeviceBuffer xd(x_bits.size() * 2, "x");
        xd.upload(x_bits.data(), x_bits.size() * 2);
        DeviceBuffer y = poisoned(x_bits.size() * 2);
        g.forward(xd.as<gpu::bf16>(), y.as<gpu::bf16>(), n, nullptr);
        Matrix xm(n, d, to_float(x_bits)), ym;
        mlp.forward(xm, ym);
        EXPECT_LT(test::rel_error(to_float(download<uint16_t>(y, x_bits.size())), ym.data), 1e-2);
    }
    std::filesystem::remove_all(dir.parent_path());
    EXPECT_THROW(gpu::load_spense_mlp(src, 0), Error);  // no spense.json beside an unpruned model
}

// The benchmark command end to end on a tiny shape: tables on stdout, a JSON report with versions.
TEST(GpuMlp, BenchGemmWritesTablesAndJson) {
    REQUIRE_GPU();
    const auto dir = test::temp_dir("gpu-bench");
    const auto json = dir / "bench.json", log = dir / "out.txt";
    const std::string cmd = cat(test::cli_path().string(), " bench gemm --models tiny:64:256 --n 1,33 --ratios 0.5 --budget-ms 1 --json ",
                                json.string(), " > ", log.string(), " 2>&1");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::ifstream in(json);
    const auto report = nlohmann::json::parse(in);
    EXPECT_EQ(report["gemm"].size(), 2u * 2 * 2);  // dtypes x N x layers (dense, cuSPARSELt and native in each)
    EXPECT_EQ(report["mlp"].size(), 2u * 2 * 3);       // dtypes x N x ratios {0, 0.5, 1}
    for (const auto& row : report["mlp"]) EXPECT_GT(row["graph_ms"]["median"].get<double>(), 0) << row.dump();
    for (const auto& row : report["gemm"]) {  // the read floors, of a padded 2:4 format too
        EXPECT_GT(row["dense_read_floor_ms"]["median"].get<double>(), 0) << row.dump();
        EXPECT_GT(row["sparse_read_floor_ms"]["median"].get<double>(), 0) << row.dump();
    }
    EXPECT_TRUE(report["run"].contains("cusparselt"));
    EXPECT_GT(report["copy_bandwidth_bytes_per_s"].get<double>(), 0);
    std::ifstream text(log);
    const std::string out((std::istreambuf_iterator<char>(text)), std::istreambuf_iterator<char>());
    EXPECT_NE(out.find("| tiny | fp8 | 33 | down |"), std::string::npos) << out;
    EXPECT_NE(out.find("replayed as a CUDA graph"), std::string::npos) << out;
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace spense

#else

TEST(GpuMlp, BuiltWithoutCuda) { GTEST_SKIP() << "spense was built without CUDA (no nvcc at configure time)"; }

#endif
