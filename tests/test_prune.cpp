// Pruning: blocked SparseGPT against a plain OBS reference, the method ordering on correlated
// inputs, permutation invariance, dense regions, layouts, exact reload, and bad options.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/linalg.h"
#include "format/hf_writer.h"
#include "format/spense.h"
#include "prune/dense_select.h"
#include "prune/hessian.h"
#include "prune/masks.h"
#include "prune/pipeline.h"
#include "prune/sparsegpt.h"
#include "test_calibration.h"
#include "test_paths.h"

using namespace spense;

namespace {

Matrix random_matrix(int64_t rows, int64_t cols, std::mt19937_64& rng, double scale = 1.0) {
    std::normal_distribution<float> n(0.0f, float(scale));
    Matrix m(rows, cols);
    for (float& v : m.data) v = n(rng);
    return m;
}

// Correlated inputs with column scales spread over two orders of magnitude: X = G A diag(s).
Matrix correlated_inputs(int64_t tokens, int64_t dim, std::mt19937_64& rng) {
    Matrix g = random_matrix(tokens, dim, rng), a = random_matrix(dim, dim, rng, 1.0 / std::sqrt(double(dim)));
    for (int64_t i = 0; i < dim; ++i) a(i, i) += 1.0f;
    Matrix x(tokens, dim);
    gemm_nn(tokens, dim, dim, 1.0f, g.data.data(), dim, a.data.data(), dim, 0.0f, x.data.data(), dim);
    std::uniform_real_distribution<double> e(-1.0, 1.0);
    for (int64_t c = 0; c < dim; ++c) {
        const float s = float(std::pow(10.0, e(rng)));
        for (int64_t r = 0; r < tokens; ++r) x(r, c) *= s;
    }
    return x;
}

std::vector<double> hessian_of(const Matrix& x) {
    HessianAccumulator acc(x.cols, "test input");
    acc.add(x);
    return acc.hessian();
}

// Optimal Brain Surgeon, unblocked and in float64, with the inverse Hessian of the remaining
// columns downdated explicitly after each column (no Cholesky): the plain algorithm SparseGPT's
// blocked Cholesky form must reproduce.
Matrix obs_reference(const Matrix& w_in, std::vector<double> h, const PruneSpec& spec, double percdamp, int64_t blocksize) {
    const int64_t rows = w_in.rows, cols = w_in.cols;
    std::vector<double> w(w_in.data.begin(), w_in.data.end());
    for (int64_t j = 0; j < cols; ++j)
        if (h[size_t(j * cols + j)] == 0) {
            h[size_t(j * cols + j)] = 1;
            for (int64_t r = 0; r < rows; ++r) w[size_t(r * cols + j)] = 0;
        }
    double mean = 0;
    for (int64_t j = 0; j < cols; ++j) mean += h[size_t(j * cols + j)];
    for (int64_t j = 0; j < cols; ++j) h[size_t(j * cols + j)] += percdamp * mean / double(cols);
    spd_inverse(h, cols, "reference");
    auto downdate = [cols](std::vector<double>& hinv, int64_t j) {
        const double p = hinv[size_t(j * cols + j)];
        std::vector<double> col(static_cast<size_t>(cols));
        for (int64_t a = 0; a < cols; ++a) col[size_t(a)] = hinv[size_t(a * cols + j)];
        for (int64_t a = 0; a < cols; ++a)
            for (int64_t b = 0; b < cols; ++b) hinv[size_t(a * cols + b)] -= col[size_t(a)] * col[size_t(b)] / p;
    };
    // The saliency denominator of column c is [H^-1]_cc after eliminating the columns before c.
    std::vector<double> diag(static_cast<size_t>(cols));
    {
        std::vector<double> hk = h;
        for (int64_t c = 0; c < cols; ++c) {
            diag[size_t(c)] = hk[size_t(c * cols + c)];
            downdate(hk, c);
        }
    }
    std::vector<uint8_t> pruned(size_t(rows * cols), 0);
    for (int64_t j = 0; j < cols; ++j) {
        if (spec.pattern == PruneSpec::Pattern::Unstructured && j % blocksize == 0) {
            std::vector<std::pair<double, int64_t>> cand;
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t c = j; c < std::min(cols, j + blocksize); ++c)
                    if (!spec.dense_column[size_t(c)]) cand.emplace_back(w[size_t(r * cols + c)] * w[size_t(r * cols + c)] / diag[size_t(c)], r * cols + c);
            std::sort(cand.begin(), cand.end());
            for (size_t i = 0; i < size_t(std::llround(double(cand.size()) * spec.sparsity)); ++i) pruned[size_t(cand[i].second)] = 1;
        }
        for (const auto& g : spec.groups)
            if (g[0] == j)
                for (int64_t r = 0; r < rows; ++r) {
                    std::array<int, 4> order = {0, 1, 2, 3};
                    auto score = [&](int k) { double v = w[size_t(r * cols + g[size_t(k)])]; return v * v / diag[size_t(g[size_t(k)])]; };
                    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score(a) < score(b); });
                    pruned[size_t(r * cols + g[size_t(order[0])])] = pruned[size_t(r * cols + g[size_t(order[1])])] = 1;
                }
        for (int64_t r = 0; r < rows; ++r)
            if (pruned[size_t(r * cols + j)]) {
                const double e = w[size_t(r * cols + j)] / h[size_t(j * cols + j)];
                for (int64_t c = j + 1; c < cols; ++c) w[size_t(r * cols + c)] -= e * h[size_t(j * cols + c)];
                w[size_t(r * cols + j)] = 0;
            }
        downdate(h, j);
    }
    return Matrix(rows, cols, std::vector<float>(w.begin(), w.end()));
}

void expect_close(const Matrix& a, const Matrix& b, double tol, const std::string& what) {
    double diff = 0, norm = 0;
    int64_t mask_mismatch = 0;
    for (size_t i = 0; i < a.data.size(); ++i) {
        diff += double(a.data[i] - b.data[i]) * (a.data[i] - b.data[i]);
        norm += double(b.data[i]) * b.data[i];
        mask_mismatch += (a.data[i] == 0.0f) != (b.data[i] == 0.0f);
    }
    EXPECT_EQ(mask_mismatch, 0) << what;
    EXPECT_LT(std::sqrt(diff / norm), tol) << what;
}

// A tiny model of the fixtures with random calibration tokens.
Transformer fixture_model(const std::string& name, Checkpoint* out_ckpt = nullptr) {
    Checkpoint ckpt = open_checkpoint(test::fixtures_dir() / "models" / name);
    Transformer t = load_transformer(ckpt);
    if (out_ckpt) *out_ckpt = std::move(ckpt);
    return t;
}

}  // namespace

TEST(SparseGpt, BlockedEqualsUnblockedObsReference) {
    struct Case {
        int64_t rows, cols, block;
        const char* kind;
    };
    for (const Case& c : {Case{7, 40, 8, "2:4"}, Case{13, 64, 128, "2:4"}, Case{5, 52, 12, "2:4 dense tail"},
                          Case{32, 48, 8, "2:4 inplace"}, Case{6, 40, 16, "unstructured"}}) {
        std::mt19937_64 rng(uint64_t(c.rows * 1000 + c.cols));
        Matrix w = random_matrix(c.rows, c.cols, rng);
        auto h = hessian_of(correlated_inputs(4 * c.cols, c.cols, rng));
        PruneSpec spec;
        const std::string kind = c.kind;
        if (kind == "2:4") spec = PruneSpec::two_four(c.cols, 0, c.cols);
        if (kind == "2:4 dense tail") spec = PruneSpec::two_four(c.cols, 0, c.cols - 12);
        if (kind == "unstructured") spec = PruneSpec::unstructured(c.cols, 0.4);
        if (kind == "2:4 inplace") {
            // Dense columns scattered: groups span non-adjacent columns, and every other group
            // straddles two blocks (its last columns still lack the pending block updates).
            std::vector<int64_t> dense = {0, 1, 19, 26, 27, 40, 41, 45};
            IndexOrders o = index_orders(c.cols, dense, DenseLayout::InPlace);
            spec.groups = o.groups;
            spec.dense_column = o.dense_position;
        }
        Matrix blocked = w;
        sparsegpt_prune(blocked, h, spec, {0.01, c.block}, "test");
        Matrix ref = obs_reference(w, h, spec, 0.01, c.block);
        expect_close(blocked, ref, 1e-4, kind);
        for (int64_t col = 0; col < c.cols; ++col) {
            if (!spec.dense_column[size_t(col)]) continue;
            for (int64_t r = 0; r < c.rows; ++r) EXPECT_NE(blocked(r, col), 0.0f) << kind << " dense column " << col;
        }
    }
}

TEST(SparseGpt, DeadInputsArePrunedAndHarmless) {
    std::mt19937_64 rng(5);
    Matrix x = correlated_inputs(200, 32, rng);
    for (int64_t r = 0; r < x.rows; ++r) x(r, 3) = 0.0f;
    Matrix w = random_matrix(4, 32, rng);
    sparsegpt_prune(w, hessian_of(x), PruneSpec::two_four(32, 0, 32), {}, "test");
    for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(w(r, 3), 0.0f);
    EXPECT_TRUE(is_2to4(w, 0, 4, 0, 32));
}

TEST(Pruning, ErrorOrdersSparseGptBelowWandaBelowMagnitude) {
    std::mt19937_64 rng(11);
    const int64_t d = 96;
    Matrix x = correlated_inputs(1024, d, rng);
    auto h = hessian_of(x);
    HessianAccumulator acc(d, "x");
    acc.add(x);
    std::vector<double> norms = acc.column_sq_norms();
    for (double& n : norms) n = std::sqrt(n);
    Matrix w = random_matrix(64, d, rng);
    Matrix mag = w, wanda = w, sgpt = w;
    prune_2to4_by_score(mag, std::vector<double>(size_t(d), 1.0));
    prune_2to4_by_score(wanda, norms);
    sparsegpt_prune(sgpt, h, PruneSpec::two_four(d, 0, d), {}, "test");
    const double e_mag = relative_error(w, mag, h), e_wanda = relative_error(w, wanda, h), e_sgpt = relative_error(w, sgpt, h);
    EXPECT_LT(e_sgpt, e_wanda);
    EXPECT_LT(e_wanda, e_mag);
    for (const Matrix* m : {&mag, &wanda, &sgpt}) EXPECT_TRUE(is_2to4(*m, 0, m->rows, 0, d));
}

TEST(Pruning, PermutedMlpGivesTheSameOutput) {
    std::mt19937_64 rng(3);
    const int64_t d = 24, f = 36;
    DenseMlp mlp(random_matrix(f, d, rng), random_matrix(f, d, rng), random_matrix(d, f, rng));
    std::vector<int64_t> perm(static_cast<size_t>(f));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    Matrix g(f, d), u(f, d), dn(d, f);
    for (int64_t i = 0; i < f; ++i) {
        std::copy_n(mlp.gate.row(perm[size_t(i)]), d, g.row(i));
        std::copy_n(mlp.up.row(perm[size_t(i)]), d, u.row(i));
        for (int64_t r = 0; r < d; ++r) dn(r, i) = mlp.down(r, perm[size_t(i)]);
    }
    DenseMlp permuted(g, u, dn);
    Matrix x = random_matrix(7, d, rng), y0, y1;
    mlp.forward(x, y0);
    permuted.forward(x, y1);
    for (size_t i = 0; i < y0.data.size(); ++i) EXPECT_NEAR(y0.data[i], y1.data[i], 1e-5f * (1.0f + std::fabs(y0.data[i])));
}

TEST(Pruning, DenseCountRoundsToTheAlignment) {
    EXPECT_EQ(spense_dense_count(25600, 5120, 0.25, 128), 12800);
    EXPECT_EQ(spense_dense_count(25600, 5120, 0.375, 128), 6400);
    EXPECT_EQ(spense_dense_count(1536, 576, 0.375, 128), 384);
    EXPECT_EQ(spense_dense_count(172, 64, 0.25, 4), 88);
    EXPECT_EQ(spense_dense_count(172, 64, 0.5, 128), 0);
    auto msg = [](auto f) {
        try {
            f();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("<no error>");
    };
    EXPECT_NE(msg([] { spense_dense_count(172, 64, 0.3, 4); }).find("not one of 0.5"), std::string::npos);
    EXPECT_NE(msg([] { spense_dense_count(98, 64, 0.25, 4); }).find("not a multiple of 4"), std::string::npos);
    EXPECT_NE(msg([] { spense_dense_count(96, 64, 0.25, 128); }).find("larger than the intermediate size"), std::string::npos);
    EXPECT_NE(msg([] { spense_dense_count(172, 64, 0.375, 128); }).find("use --align 8 or smaller"), std::string::npos)
        << msg([] { spense_dense_count(172, 64, 0.375, 128); });
    EXPECT_NE(msg([] { spense_dense_count(172, 64, 0.25, 6); }).find("multiple of 4"), std::string::npos);
}

class LayoutEndsDenseLast : public ::testing::TestWithParam<DenseLayout> {};

TEST_P(LayoutEndsDenseLast, DenseRowsUntouchedAndRegionsValid) {
    Checkpoint ckpt;
    Transformer model = fixture_model("qwen2_untied", &ckpt);
    const ModelConfig cfg = model.config();
    std::vector<DenseMlp> before;
    for (const auto& l : model.weights().layers) before.push_back(dynamic_cast<const DenseMlp&>(*l.mlp));
    PruneOptions opt;
    opt.method = PruneMethod::SpenseGptPlus;
    opt.sparsity = 0.25;
    opt.align = 16;
    opt.layout = GetParam();
    PruneReport rep = prune_model(model, test::random_calibration(cfg.vocab, 4, 32, 1), opt);
    const int64_t f = cfg.intermediate, k = 48;
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const auto& mlp = dynamic_cast<const DenseMlp&>(*model.weights().layers[size_t(l)].mlp);
        const auto& src = rep.layers[size_t(l)].source_index;
        EXPECT_EQ(rep.layers[size_t(l)].dense, k);
        SpenseMlpWeights s{mlp.gate, mlp.up, mlp.down, k};
        EXPECT_EQ(check_spense_mlp(s), "") << "layer " << l;
        for (int64_t q = f - k; q < f; ++q) {
            // Dense rows of gate/up are left out of the problem: bit-identical to the source rows.
            for (int64_t j = 0; j < cfg.hidden; ++j) {
                ASSERT_EQ(mlp.gate(q, j), before[size_t(l)].gate(src[size_t(q)], j));
                ASSERT_EQ(mlp.up(q, j), before[size_t(l)].up(src[size_t(q)], j));
            }
            // Dense columns of down are never masked.
            for (int64_t r = 0; r < cfg.hidden; ++r) ASSERT_NE(mlp.down(r, q), 0.0f);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Layouts, LayoutEndsDenseLast, ::testing::Values(DenseLayout::Back, DenseLayout::Front, DenseLayout::InPlace),
                         [](const auto& info) { return std::string(dense_layout_name(info.param)); });

TEST(Pruning, WrittenCheckpointReloadsToTheSameLogits) {
    for (DType dtype : {DType::F32, DType::BF16}) {
        Checkpoint ckpt;
        Transformer model = fixture_model("llama_tied_rope_llama3", &ckpt);
        round_weights(model.weights(), dtype);
        PruneOptions opt;
        opt.method = PruneMethod::SpenseGpt;
        opt.sparsity = 0.375;
        opt.align = 8;
        opt.weight_dtype = dtype;
        prune_model(model, test::random_calibration(model.config().vocab, 3, 24, 2), opt);
        auto dir = test::temp_dir("reload") / "pruned";
        write_hf_checkpoint(dir, ckpt, model, dtype, {{"format", "spense"}});
        Transformer reloaded = load_transformer(open_checkpoint(dir));
        std::vector<int32_t> ids = {1, 17, 200, 3, 99, 42, 7};
        Matrix a = model.forward(ids), b = reloaded.forward(ids);
        ASSERT_EQ(a.data.size(), b.data.size());
        EXPECT_EQ(0, std::memcmp(a.data.data(), b.data.data(), a.data.size() * 4)) << dtype_name(dtype);
        std::filesystem::remove_all(dir.parent_path());
    }
}

TEST(Pruning, BadOptionsAndInputsAreRefused) {
    Transformer model = fixture_model("llama_untied");
    const ModelConfig& cfg = model.config();
    PruneOptions opt;
    opt.method = PruneMethod::Wanda;
    opt.sparsity = 0.375;
    EXPECT_THROW(opt.validate(cfg), Error);  // 2:4 baselines are 50%
    opt.method = PruneMethod::SpenseGpt;
    opt.align = 128;  // larger than d_ff = 96
    EXPECT_THROW(opt.validate(cfg), Error);
    opt.align = 16;
    opt.pattern = PruneSpec::Pattern::Unstructured;
    EXPECT_THROW(opt.validate(cfg), Error);
    opt.pattern = PruneSpec::Pattern::TwoFour;
    opt.layout = DenseLayout::Front;  // layouts are SpenseGPT+'s
    EXPECT_THROW(opt.validate(cfg), Error);

    // NaN in the activations: named, and nothing written.
    opt = PruneOptions{};
    opt.method = PruneMethod::SparseGpt;
    model.weights().layers[0].post_norm[3] = std::nanf("");
    try {
        prune_model(model, test::random_calibration(cfg.vocab, 2, 16, 3), opt);
        FAIL() << "NaN activations were accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("non-finite value"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("layer 0 mlp input"), std::string::npos) << e.what();
    }
}

TEST(Pruning, ExistingOutputDirectoryIsNeverTouched) {
    auto dir = test::temp_dir("exists");
    std::ofstream(dir / "keep.txt") << "precious";
    EXPECT_THROW(check_new_output_dir(dir), Error);
    EXPECT_THROW(check_new_output_dir(dir / "missing-parent" / "out"), Error);
    Checkpoint ckpt;
    Transformer model = fixture_model("llama_untied", &ckpt);
    EXPECT_THROW(write_hf_checkpoint(dir, ckpt, model, DType::F32, {}), Error);
    EXPECT_TRUE(std::filesystem::exists(dir / "keep.txt"));
    int entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.parent_path()))
        entries += e.path().filename().string().find(".partial-") != std::string::npos;
    EXPECT_EQ(entries, 0);
    std::filesystem::remove_all(dir);
}
