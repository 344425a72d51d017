// Resumable pruning (prune/resume.h) on the CPU: a run interrupted at a layer boundary or inside a
// layer, then resumed, ends with the same weights bit for bit as an uninterrupted one; a state is
// never continued by another run's options.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "prune/cpu_backend.h"
#include "prune/pipeline.h"
#include "prune/resume.h"
#include "test_calibration.h"
#include "test_paths.h"

using namespace spense;

namespace {

PruneOptions options() {
    PruneOptions o;
    o.method = PruneMethod::SpenseGptPlus;
    o.sparsity = 0.25;
    o.align = 8;
    o.weight_dtype = DType::BF16;
    return o;
}

// Prunes the fixture with a state in `dir`; with `abort_at` set, the test hook interrupts it.
Transformer run(const std::filesystem::path& dir, bool resume, const char* abort_at) {
    Transformer model = load_transformer(open_checkpoint(test::fixtures_dir() / "models" / "qwen3_untied"));
    round_weights(model.weights(), DType::BF16);
    if (abort_at) ::setenv("SPENSE_TEST_ABORT", abort_at, 1);
    else ::unsetenv("SPENSE_TEST_ABORT");
    PruneState state(dir, "fixture", DType::BF16, resume);
    CpuPruneBackend backend(model);
    try {
        prune_model(model, test::random_calibration(model.config().vocab, 3, 24, 5), options(), backend, &state);
    } catch (const Error& e) {
        ::unsetenv("SPENSE_TEST_ABORT");
        if (!abort_at) throw;
        EXPECT_NE(std::string(e.what()).find("SPENSE_TEST_ABORT"), std::string::npos) << e.what();
    }
    ::unsetenv("SPENSE_TEST_ABORT");
    return model;
}

void expect_same_mlps(const Transformer& a, const Transformer& b, const std::string& what) {
    for (size_t l = 0; l < a.weights().layers.size(); ++l) {
        const auto& x = dynamic_cast<const DenseMlp&>(*a.weights().layers[l].mlp);
        const auto& y = dynamic_cast<const DenseMlp&>(*b.weights().layers[l].mlp);
        for (auto [m, n] : {std::pair{&x.gate, &y.gate}, {&x.up, &y.up}, {&x.down, &y.down}})
            EXPECT_EQ(0, std::memcmp(m->data.data(), n->data.data(), m->data.size() * sizeof(float))) << what << ", layer " << l;
    }
}

}  // namespace

TEST(Resume, InterruptedRunsResumeToTheSameWeights) {
    const auto root = test::temp_dir("resume");
    const Transformer whole = run(root / "whole", false, nullptr);
    for (const char* point : {"after:0", "in:0", "in:1"}) {
        const auto dir = root / (std::string("cut-") + point[0] + point[std::strlen(point) - 1]);
        run(dir, false, point);
        ASSERT_TRUE(std::filesystem::exists(dir / "state.json")) << point;
        const Transformer resumed = run(dir, true, nullptr);
        expect_same_mlps(whole, resumed, point);
    }
    std::filesystem::remove_all(root);
}

TEST(Resume, StatesOfOtherRunsAreRefused) {
    const auto dir = test::temp_dir("resume-refused") / "state";
    { PruneState s(dir, "run A", DType::F32, false); }
    EXPECT_THROW(PruneState(dir, "run A", DType::F32, false), Error);  // exists: needs --resume
    EXPECT_THROW(PruneState(dir, "run B", DType::F32, true), Error);   // other fingerprint
    EXPECT_NO_THROW(PruneState(dir, "run A", DType::F32, true));
    EXPECT_THROW(PruneState(dir.parent_path() / "none", "run A", DType::F32, true), Error);  // nothing to resume
    std::filesystem::remove_all(dir.parent_path());
}
