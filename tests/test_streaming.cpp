// Pruning with the MLPs streamed, as `spense prune` does for models too large for host memory:
// the model loaded without MLPs, each layer's MLP loaded from the checkpoint when the pipeline
// reaches it and released once committed to the state, the checkpoint written one tensor at a
// time with the MLPs copied from the state. It must write the same bytes as pruning and writing
// in memory (also sharded, and after an interrupted run is resumed), hold one layer's MLP at a
// time, and fail with errors that name what is missing.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>

#include "core/error.h"
#include "format/hf_writer.h"
#include "prune/cpu_backend.h"
#include "prune/pipeline.h"
#include "prune/resume.h"
#include "test_calibration.h"
#include "test_errors.h"
#include "test_paths.h"

using namespace spense;
using test::error_of;

namespace {

struct Case {
    std::string fixture;  // a directory of tests/fixtures/models, or a file in it
    DType dtype;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.fixture << ' ' << dtype_name(c.dtype); }

Checkpoint open_fixture(const Case& c) { return open_checkpoint(test::fixtures_dir() / "models" / c.fixture); }

PruneOptions options(DType dtype) {
    PruneOptions o;
    o.method = PruneMethod::SpenseGptPlus;
    o.sparsity = 0.25;
    o.align = 8;
    o.weight_dtype = dtype;
    return o;
}

CalibrationSet calibration(const Transformer& model) { return test::random_calibration(model.config().vocab, 3, 24, 7); }

const nlohmann::json kSpenseJson = {{"format", "spense"}};

// The CPU backend, checking at every call that names a layer that no other layer's MLP is loaded
// in the model: what the streamed pipeline promises about host memory, seen through the backend
// interface the pipeline drives.
class OneMlpBackend : public PruneBackend {
public:
    explicit OneMlpBackend(const Transformer& model) : model_(model), cpu_(model) {}

    void embed(const CalibrationSet& calib) override { cpu_.embed(calib); }
    void attention(int64_t l) override {
        check(l);
        cpu_.attention(l);
    }
    void mlp_forward(int64_t l, const DenseMlp& mlp) override {
        check(l);
        cpu_.mlp_forward(l, mlp);
    }
    void collect_input(int64_t l, const DenseMlp& mlp, Z0Stats z0, const std::string& what) override {
        check(l);
        cpu_.collect_input(l, mlp, z0, what);
    }
    void collect_intermediate(int64_t l, const DenseMlp& mlp, const std::string& what) override {
        check(l);
        cpu_.collect_intermediate(l, mlp, what);
    }
    std::vector<double> column_sq_norms(Stat s) override { return cpu_.column_sq_norms(s); }
    std::vector<double> sparsegpt_column_weights(Stat s, double percdamp, const std::string& what) override {
        return cpu_.sparsegpt_column_weights(s, percdamp, what);
    }
    IndexSums index_sums(const DenseMlp& mlp, const std::vector<double>& c_in, const std::vector<double>& c_z) override {
        return cpu_.index_sums(mlp, c_in, c_z);
    }
    void sparsegpt(Stat s, Matrix& w, const PruneSpec& spec, const SparseGptOptions& opt, const std::string& what) override {
        cpu_.sparsegpt(s, w, spec, opt, what);
    }
    double relative_error(Stat s, const Matrix& w, const Matrix& w_new) override { return cpu_.relative_error(s, w, w_new); }
    double apply_mlp(int64_t l, const DenseMlp& pruned, const DenseMlp& original) override {
        check(l);
        return cpu_.apply_mlp(l, pruned, original);
    }
    nlohmann::json describe() const override { return cpu_.describe(); }

    int64_t checks = 0;

private:
    void check(int64_t l) {
        ++checks;
        const auto& layers = model_.weights().layers;
        for (size_t m = 0; m < layers.size(); ++m)
            if (int64_t(m) != l) {
                EXPECT_EQ(layers[m].mlp, nullptr) << "layer " << m << "'s MLP is loaded while the pipeline is at layer " << l;
            }
    }

    const Transformer& model_;
    CpuPruneBackend cpu_;
};

// Prunes the whole model in memory and writes it: the reference.
void write_in_memory(const Case& c, const std::filesystem::path& out, uint64_t shard_bytes) {
    const Checkpoint ckpt = open_fixture(c);
    Transformer model = load_transformer(ckpt);
    round_weights(model.weights(), c.dtype);
    prune_model(model, calibration(model), options(c.dtype));
    write_hf_checkpoint(out, ckpt, model.config(), hf_tensors(model, c.dtype), c.dtype, kSpenseJson, shard_bytes);
}

// Prunes as `spense prune` does, state in `state_dir`; with `abort_at`, the test hook interrupts
// the run and nothing is written. Returns whether the checkpoint was written.
bool write_streamed(const Case& c, const std::filesystem::path& out, const std::filesystem::path& state_dir, uint64_t shard_bytes,
                    bool resume = false, const char* abort_at = nullptr) {
    const Checkpoint ckpt = open_fixture(c);
    Transformer model = load_transformer(ckpt, MlpWeights::Skip);
    round_weights(model.weights(), c.dtype);
    PruneState state(state_dir, "fixture", c.dtype, resume);
    OneMlpBackend backend(model);
    if (abort_at) ::setenv("SPENSE_TEST_ABORT", abort_at, 1);
    try {
        prune_model(model, ckpt, calibration(model), options(c.dtype), backend, state);
    } catch (const Error& e) {
        ::unsetenv("SPENSE_TEST_ABORT");
        if (!abort_at) throw;
        EXPECT_NE(std::string(e.what()).find("SPENSE_TEST_ABORT"), std::string::npos) << e.what();
        return false;
    }
    ::unsetenv("SPENSE_TEST_ABORT");
    EXPECT_GT(backend.checks, 0);
    for (const auto& lw : model.weights().layers) EXPECT_EQ(lw.mlp, nullptr) << "an MLP was left loaded after pruning";
    const MlpBytes from_state = [&state](int64_t l, MlpProj p, std::span<uint8_t> bytes) { state.read_weight(l, p, bytes); };
    write_hf_checkpoint(out, ckpt, model.config(), hf_tensors(model, c.dtype, from_state), c.dtype, kSpenseJson, shard_bytes);
    state.remove();
    return true;
}

std::string file_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Both directories hold the same files with the same bytes; returns how many files.
size_t expect_same_files(const std::filesystem::path& a, const std::filesystem::path& b, const std::string& what) {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(a)) {
        const auto name = e.path().filename();
        ++n;
        EXPECT_TRUE(std::filesystem::exists(b / name)) << what << ": " << name << " is missing";
        EXPECT_TRUE(file_bytes(e.path()) == file_bytes(b / name)) << what << ": " << name << " differs";
    }
    EXPECT_EQ(n, size_t(std::distance(std::filesystem::directory_iterator(b), std::filesystem::directory_iterator())))
        << what << ": the streamed output has other files";
    return n;
}

class Streamed : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(Streamed, WritesTheBytesOfThePruneInMemory) {
    const Case c = GetParam();
    const auto root = test::temp_dir("streamed");
    write_in_memory(c, root / "memory", kHfShardBytes);
    ASSERT_TRUE(write_streamed(c, root / "streamed", root / "state", kHfShardBytes));
    EXPECT_TRUE(std::filesystem::exists(root / "streamed" / "model.safetensors"));
    expect_same_files(root / "memory", root / "streamed", "one file");
    EXPECT_FALSE(std::filesystem::exists(root / "state")) << "the state outlived the output";

    // Shards of about a third of the weights: an index and several files, still the same bytes,
    // and the model they hold is the one written whole.
    const Transformer unpruned = load_transformer(open_fixture(c));
    uint64_t total = 0;
    for (const auto& t : hf_tensors(unpruned, c.dtype)) total += t.nbytes();
    write_in_memory(c, root / "memory-sharded", total / 3);
    ASSERT_TRUE(write_streamed(c, root / "streamed-sharded", root / "state", total / 3));
    EXPECT_GE(expect_same_files(root / "memory-sharded", root / "streamed-sharded", "sharded"), 4u);
    EXPECT_TRUE(std::filesystem::exists(root / "streamed-sharded" / "model.safetensors.index.json"));
    const Checkpoint whole = open_checkpoint(root / "memory"), sharded = open_checkpoint(root / "streamed-sharded");
    ASSERT_EQ(whole.tensors.size(), sharded.tensors.size());
    for (const auto& [name, t] : whole.tensors) {
        const TensorRef& s = sharded.tensor(name);
        ASSERT_EQ(s.nbytes, t.nbytes) << name;
        EXPECT_EQ(0, std::memcmp(s.data, t.data, t.nbytes)) << name;
    }
    std::filesystem::remove_all(root);
}

TEST_P(Streamed, ResumedRunsWriteTheSameBytes) {
    const Case c = GetParam();
    const auto root = test::temp_dir("streamed-resume");
    write_in_memory(c, root / "memory", kHfShardBytes);
    for (const char* point : {"after:0", "in:0", "in:1"}) {
        const auto out = root / (std::string("out-") + point[0] + point[std::strlen(point) - 1]);
        const auto state = out.string() + ".partial";
        EXPECT_FALSE(write_streamed(c, out, state, kHfShardBytes, false, point)) << point;
        ASSERT_TRUE(std::filesystem::exists(std::filesystem::path(state) / "state.json")) << point;
        EXPECT_FALSE(std::filesystem::exists(out)) << point;
        ASSERT_TRUE(write_streamed(c, out, state, kHfShardBytes, true)) << point;
        expect_same_files(root / "memory", out, point);
    }
    std::filesystem::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Streamed,
                         ::testing::Values(Case{"qwen3_untied", DType::F32}, Case{"qwen3_untied", DType::BF16},
                                           Case{"llama_tied_rope_llama3", DType::BF16}, Case{"gguf_llama/model.gguf", DType::F32}),
                         [](const auto& info) {
                             std::string name = info.param.fixture.substr(0, info.param.fixture.find('/')) + "_" + std::string(dtype_name(info.param.dtype));
                             for (char& ch : name)
                                 if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                             return name;
                         });

TEST(StreamedErrors, MissingOrUnloadedMlpsAreNamed) {
    const Case c{"qwen3_untied", DType::F32};
    const Checkpoint intact = open_fixture(c);
    const std::string up1 = "model.layers.1.mlp.up_proj.weight";

    // A checkpoint without one MLP tensor fails at load, before any pruning, naming it.
    Checkpoint damaged = open_fixture(c);
    damaged.tensors.erase(up1);
    std::string e = error_of([&] { load_transformer(damaged, MlpWeights::Skip); });
    EXPECT_NE(e.find(up1), std::string::npos) << e;
    EXPECT_NE(e.find(intact.path.string()), std::string::npos) << e;
    // And a wrong shape names the tensor, its file and both shapes.
    Checkpoint reshaped = open_fixture(c);
    reshaped.tensors.at(up1).shape = {64, 96};
    e = error_of([&] { load_transformer(reshaped, MlpWeights::Skip); });
    EXPECT_NE(e.find(up1), std::string::npos) << e;
    EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
    EXPECT_NE(e.find("[64, 96]"), std::string::npos) << e;
    EXPECT_NE(e.find("[96, 64]"), std::string::npos) << e;

    // Streaming from a source that lacks the tensor fails at that layer, naming it.
    const auto root = test::temp_dir("streamed-errors");
    {
        Transformer model = load_transformer(intact, MlpWeights::Skip);
        PruneState state(root / "state", "errors", DType::F32, false);
        CpuPruneBackend backend(model);
        e = error_of([&] { prune_model(model, damaged, calibration(model), options(DType::F32), backend, state); });
        EXPECT_NE(e.find(up1), std::string::npos) << e;
        EXPECT_EQ(state.layers_done(), 1);

        // A layer's saved weights that are not all there name the file.
        std::filesystem::resize_file(root / "state" / "layer-0.bin", 100);
        std::vector<uint8_t> bytes(size_t(96 * 64 * 4));
        e = error_of([&] { state.read_weight(0, MlpProj::Down, bytes); });
        EXPECT_NE(e.find("layer-0.bin"), std::string::npos) << e;
    }

    // A model without its MLPs names the layer when asked to run one or to write it.
    Transformer model = load_transformer(intact, MlpWeights::Skip);
    e = error_of([&] { model.forward(std::vector<int32_t>{1, 2, 3}); });
    EXPECT_NE(e.find("layer 0: the MLP weights are not loaded"), std::string::npos) << e;
    e = error_of([&] { hf_tensors(model, DType::F32); });
    EXPECT_NE(e.find("layer 0"), std::string::npos) << e;

    // Streaming into a model whose MLPs are loaded is refused rather than holding them all.
    Transformer whole = load_transformer(intact);
    PruneState state(root / "state2", "errors", DType::F32, false);
    CpuPruneBackend backend(whole);
    e = error_of([&] { prune_model(whole, intact, calibration(whole), options(DType::F32), backend, state); });
    EXPECT_NE(e.find("MlpWeights::Skip"), std::string::npos) << e;
    std::filesystem::remove_all(root);
}
