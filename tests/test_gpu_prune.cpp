// The GPU pruning backend (gpu/gpu_pruner.h) against the CPU reference (prune/cpu_backend.h) on
// the fixture models of every architecture (q/k norms, biases, sliding window, Llama 3 RoPE):
// the layer forward (through the MLP input's column norms), Hessian statistics, SparseGPT column
// weights, SpenseGPT+ index sums, SparseGPT in every variant (adjacent and non-adjacent 2:4 groups,
// dense columns, unstructured), errors; the streaming attention kernel against a float64
// reference at long-ish sequences; and GPU resume giving the same weights bit for bit. Skipped
// where no CUDA device is present.
#include <gtest/gtest.h>

#ifdef SPENSE_HAS_CUDA

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/device_buffer.h"
#include "gpu/gpu_pruner.h"
#include "gpu/layer_forward.h"
#include "prune/cpu_backend.h"
#include "prune/pipeline.h"
#include "prune/resume.h"
#include "test_calibration.h"
#include "test_gpu.h"
#include "test_paths.h"

namespace spense {
namespace {

double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
    double d = 0, n = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        n += b[i] * b[i];
    }
    return std::sqrt(d / std::max(n, 1e-300));
}

std::vector<double> as_double(const Matrix& m) { return {m.data.begin(), m.data.end()}; }

// Fraction of 4-element groups of each row whose zero pattern agrees.
double group_agreement(const Matrix& a, const Matrix& b) {
    int64_t same = 0, total = 0;
    for (int64_t r = 0; r < a.rows; ++r)
        for (int64_t c = 0; c + 4 <= a.cols; c += 4, ++total) {
            bool eq = true;
            for (int k = 0; k < 4; ++k) eq &= (a(r, c + k) == 0.0f) == (b(r, c + k) == 0.0f);
            same += eq;
        }
    return double(same) / double(total);
}

class GpuPruneVsCpu : public ::testing::TestWithParam<const char*> {};

TEST_P(GpuPruneVsCpu, EveryStageMatchesTheReference) {
    REQUIRE_GPU();
    Transformer model = load_transformer(open_checkpoint(test::fixtures_dir() / "models" / GetParam()));
    const ModelConfig& cfg = model.config();
    const CalibrationSet calib = test::random_calibration(cfg.vocab, 5, std::min<int64_t>(cfg.max_positions, 77), 3);
    CpuPruneBackend cpu(model);
    gpu::GpuPruneOptions go;
    go.activation_budget_bytes = 0;  // through host chunks, the harder path
    gpu::GpuPruneBackend gpu(model, go);
    const auto& mlp = dynamic_cast<const DenseMlp&>(*model.weights().layers[0].mlp);
    for (PruneBackend* b : {static_cast<PruneBackend*>(&cpu), static_cast<PruneBackend*>(&gpu)}) {
        b->embed(calib);
        b->attention(0);
        b->collect_input(0, mlp, Z0Stats::Hessian, "layer 0");
    }
    // The layer forward up to the MLP input, and the statistics.
    EXPECT_LT(rel_diff(gpu.column_sq_norms(Stat::Input), cpu.column_sq_norms(Stat::Input)), 1e-4) << "forward + Hessian diag";
    EXPECT_LT(rel_diff(gpu.column_sq_norms(Stat::Intermediate0), cpu.column_sq_norms(Stat::Intermediate0)), 1e-4) << "z0 norms";
    const auto wi = gpu.sparsegpt_column_weights(Stat::Input, 0.01, "in"), wc = cpu.sparsegpt_column_weights(Stat::Input, 0.01, "in");
    EXPECT_LT(rel_diff(wi, wc), 1e-3) << "1 / U_jj^2";
    const auto ci = cpu.column_sq_norms(Stat::Input), cz = cpu.column_sq_norms(Stat::Intermediate0);
    const IndexSums sg = gpu.index_sums(mlp, ci, cz), sc = cpu.index_sums(mlp, ci, cz);
    EXPECT_LT(rel_diff(sg.gate, sc.gate), 1e-12);
    EXPECT_LT(rel_diff(sg.up, sc.up), 1e-12);
    EXPECT_LT(rel_diff(sg.down, sc.down), 1e-12);

    // SparseGPT variants on gate (input Hessian) and, after collecting z, on down.
    const int64_t d = cfg.hidden, f = cfg.intermediate;
    SparseGptOptions so;
    so.blocksize = 32;  // several blocks, groups that span them
    auto compare = [&](Stat s, const Matrix& w0, const PruneSpec& spec, const std::string& what) {
        Matrix a = w0, b = w0;
        gpu.sparsegpt(s, a, spec, so, what);
        cpu.sparsegpt(s, b, spec, so, what);
        EXPECT_GE(group_agreement(a, b), 0.99) << what;
        EXPECT_LT(rel_diff(as_double(a), as_double(b)), 2e-2) << what;
        EXPECT_NEAR(gpu.relative_error(s, w0, a), cpu.relative_error(s, w0, a), 1e-4 + 1e-3 * cpu.relative_error(s, w0, a)) << what;
    };
    compare(Stat::Input, mlp.gate, PruneSpec::two_four(d, 0, d), "gate 2:4");
    compare(Stat::Input, mlp.gate, PruneSpec::two_four(d, 8, d - 16), "gate 2:4 with dense columns");
    compare(Stat::Input, mlp.gate, PruneSpec::unstructured(d, 0.5), "gate unstructured");
    for (PruneBackend* b : {static_cast<PruneBackend*>(&cpu), static_cast<PruneBackend*>(&gpu)}) b->collect_intermediate(0, mlp, "layer 0");
    EXPECT_LT(rel_diff(gpu.column_sq_norms(Stat::Intermediate), cpu.column_sq_norms(Stat::Intermediate)), 1e-4) << "z norms";
    // In-place layout: random dense indices, groups over the sparse ones (not adjacent).
    std::vector<int64_t> dense;
    for (int64_t i = 3; i < f && int64_t(dense.size()) < 24; i += 4) dense.push_back(i);
    const IndexOrders o = index_orders(f, dense, DenseLayout::InPlace);
    PruneSpec inplace;
    inplace.groups = o.groups;
    inplace.dense_column = o.dense_position;
    compare(Stat::Intermediate, mlp.down, inplace, "down in place");
    compare(Stat::Intermediate, mlp.down, PruneSpec::two_four(f, 0, f), "down 2:4");

    // The MLP output error and the residual update.
    const double ec = cpu.apply_mlp(0, mlp, mlp), eg = gpu.apply_mlp(0, mlp, mlp);
    EXPECT_EQ(ec, 0.0);
    EXPECT_EQ(eg, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuPruneVsCpu,
                         ::testing::Values("qwen3_untied", "qwen3_tied_bias", "qwen2_tied", "mistral_untied_window", "llama_tied_rope_llama3"));

// Streaming attention against a float64 reference: T not a multiple of the tiles, GQA, windows.
TEST(GpuAttention, MatchesTheReferenceAtLongSequences) {
    REQUIRE_GPU();
    for (const auto& [T, hd, window] : {std::tuple{1000, 128, 0}, {777, 64, 300}, {300, 24, 0}, {130, 256, 17}}) {
        const gpu::AttentionShape s{2, T, 4, 2, hd, window};
        const int64_t qd = s.heads * hd, kvd = s.kv_heads * hd;
        std::mt19937_64 rng(T);
        std::normal_distribution<float> n(0.0f, 1.0f);
        std::vector<float> q(size_t(s.samples * T * qd)), k(size_t(s.samples * T * kvd)), v(k.size()), o(q.size());
        for (auto* x : {&q, &k, &v})
            for (float& e : *x) e = n(rng);
        gpu::DeviceBuffer qb(q.size() * 4, "q"), kb(k.size() * 4, "k"), vb(v.size() * 4, "v"), ob(o.size() * 4, "o");
        qb.upload(q.data(), q.size() * 4);
        kb.upload(k.data(), k.size() * 4);
        vb.upload(v.data(), v.size() * 4);
        gpu::launch_attention(qb.as<float>(), kb.as<float>(), vb.as<float>(), ob.as<float>(), s, nullptr);
        ob.download(o.data(), o.size() * 4);
        double err = 0, norm = 0;
        const double scale = 1.0 / std::sqrt(double(hd));
        for (int64_t b = 0; b < s.samples; ++b)
            for (int64_t h = 0; h < s.heads; ++h)
                for (int64_t t = 0; t < T; t += 7) {  // a sample of the query rows
                    const int64_t kvh = h / (s.heads / s.kv_heads), first = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
                    std::vector<double> p;
                    double mx = -1e300;
                    for (int64_t j = first; j <= t; ++j) {
                        double dot = 0;
                        for (int64_t i = 0; i < hd; ++i) dot += double(q[size_t((b * T + t) * qd + h * hd + i)]) * k[size_t((b * T + j) * kvd + kvh * hd + i)];
                        p.push_back(dot * scale);
                        mx = std::max(mx, dot * scale);
                    }
                    double sum = 0;
                    for (double& e : p) sum += (e = std::exp(e - mx));
                    for (int64_t i = 0; i < hd; ++i) {
                        double ref = 0;
                        for (int64_t j = first; j <= t; ++j) ref += p[size_t(j - first)] / sum * v[size_t((b * T + j) * kvd + kvh * hd + i)];
                        const double got = o[size_t((b * T + t) * qd + h * hd + i)];
                        err += (got - ref) * (got - ref);
                        norm += ref * ref;
                    }
                }
        EXPECT_LT(std::sqrt(err / norm), 1e-5) << "T " << T << ", head dim " << hd << ", window " << window;
    }
}

// Whole pruning runs: GPU vs CPU masks, and GPU resume bit for bit.
TEST(GpuPrune, PipelineAgreesWithTheCpuAndResumesExactly) {
    REQUIRE_GPU();
    auto load = [] {
        Transformer m = load_transformer(open_checkpoint(test::fixtures_dir() / "models" / "qwen3_untied"));
        round_weights(m.weights(), DType::BF16);
        return m;
    };
    PruneOptions opt;
    opt.method = PruneMethod::SpenseGptPlus;
    opt.sparsity = 0.25;
    opt.align = 8;
    opt.weight_dtype = DType::BF16;
    const CalibrationSet calib = test::random_calibration(256, 4, 64, 9);
    const auto root = test::temp_dir("gpu-resume");

    Transformer on_cpu = load(), on_gpu = load();
    prune_model(on_cpu, calib, opt);
    {
        gpu::GpuPruneBackend g(on_gpu, {});
        prune_model(on_gpu, calib, opt, g, nullptr);
    }
    for (size_t l = 0; l < on_cpu.weights().layers.size(); ++l) {
        const auto& a = dynamic_cast<const DenseMlp&>(*on_gpu.weights().layers[l].mlp);
        const auto& b = dynamic_cast<const DenseMlp&>(*on_cpu.weights().layers[l].mlp);
        EXPECT_GE(group_agreement(a.gate, b.gate), 0.97) << "layer " << l;
        EXPECT_GE(group_agreement(a.down, b.down), 0.97) << "layer " << l;
    }

    for (const char* point : {"after:0", "in:1"}) {
        Transformer first = load(), resumed = load();
        const auto dir = root / (std::string("state-") + point[0]);
        ::setenv("SPENSE_TEST_ABORT", point, 1);
        {
            PruneState st(dir, "gpu", DType::BF16, false);
            gpu::GpuPruneBackend g(first, {});
            EXPECT_THROW(prune_model(first, calib, opt, g, &st), Error);
        }
        ::unsetenv("SPENSE_TEST_ABORT");
        PruneState st(dir, "gpu", DType::BF16, true);
        gpu::GpuPruneBackend g(resumed, {});
        prune_model(resumed, calib, opt, g, &st);
        for (size_t l = 0; l < on_gpu.weights().layers.size(); ++l) {
            const auto& a = dynamic_cast<const DenseMlp&>(*on_gpu.weights().layers[l].mlp);
            const auto& b = dynamic_cast<const DenseMlp&>(*resumed.weights().layers[l].mlp);
            for (auto [x, y] : {std::pair{&a.gate, &b.gate}, {&a.up, &b.up}, {&a.down, &b.down}})
                EXPECT_EQ(0, std::memcmp(x->data.data(), y->data.data(), x->data.size() * 4)) << point << ", layer " << l;
        }
    }
    std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace spense

#endif  // SPENSE_HAS_CUDA
