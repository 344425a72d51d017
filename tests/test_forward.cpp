// The CPU forward against transformers: logits of tiny random-weight models of every supported
// architecture, tied and untied (fixtures made by tests/fixtures/models/make_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "test_paths.h"

using namespace spense;

namespace {

struct Reference {
    std::vector<int32_t> ids;
    Matrix logits;
};

Reference load_reference(const std::filesystem::path& dir) {
    SafetensorsFile st = read_safetensors(dir / "reference.safetensors");
    const TensorRef& ids = st.tensors.at("input_ids");
    const TensorRef& lg = st.tensors.at("logits");
    Reference r;
    std::vector<float> idf(size_t(ids.numel()));
    to_f32(ids.dtype, ids.data, ids.numel(), idf.data());
    for (float f : idf) r.ids.push_back(int32_t(f));
    r.logits = Matrix(lg.shape[0], lg.shape[1]);
    to_f32(lg.dtype, lg.data, lg.numel(), r.logits.data.data());
    return r;
}

// max |a - b| / max |b|: a relative error that is meaningful for logits near zero.
double max_rel_error(const Matrix& a, const Matrix& b) {
    EXPECT_EQ(a.rows, b.rows);
    EXPECT_EQ(a.cols, b.cols);
    double diff = 0, scale = 0;
    for (size_t i = 0; i < b.data.size(); ++i) {
        diff = std::max(diff, double(std::fabs(a.data[i] - b.data[i])));
        scale = std::max(scale, double(std::fabs(b.data[i])));
    }
    return diff / scale;
}

}  // namespace

class ForwardMatchesTransformers : public ::testing::TestWithParam<std::string> {};

TEST_P(ForwardMatchesTransformers, Logits) {
    auto dir = test::fixtures_dir() / "models" / GetParam();
    Reference ref = load_reference(GetParam() == "qwen3_untied_sharded" ? test::fixtures_dir() / "models" / "qwen3_untied" : dir);
    Checkpoint ckpt = open_checkpoint(GetParam() == "gguf_llama" ? dir / "model.gguf" : dir);
    Transformer model = load_transformer(ckpt);
    Matrix logits = model.forward(ref.ids);
    double err = max_rel_error(logits, ref.logits);
    EXPECT_LT(err, 1e-4) << GetParam();
    RecordProperty("max_rel_error", std::to_string(err));
}

INSTANTIATE_TEST_SUITE_P(Architectures, ForwardMatchesTransformers,
                         ::testing::Values("llama_untied", "llama_tied_rope_llama3", "mistral_untied_window", "mistral_tied",
                                           "qwen2_untied", "qwen2_tied", "qwen3_untied", "qwen3_tied_bias",
                                           "qwen3_untied_sharded", "gguf_llama"));

TEST(Forward, SequenceNllMatchesLogits) {
    Checkpoint ckpt = open_checkpoint(test::fixtures_dir() / "models" / "qwen2_tied");
    Transformer model = load_transformer(ckpt);
    Reference ref = load_reference(test::fixtures_dir() / "models" / "qwen2_tied");
    double expected = 0;
    for (int64_t t = 0; t + 1 < ref.logits.rows; ++t) {
        const float* z = ref.logits.row(t);
        double mx = *std::max_element(z, z + ref.logits.cols), sum = 0;
        for (int64_t c = 0; c < ref.logits.cols; ++c) sum += std::exp(double(z[c]) - mx);
        expected += std::log(sum) + mx - z[ref.ids[size_t(t + 1)]];
    }
    EXPECT_NEAR(model.sequence_nll(ref.ids), expected, 1e-4 * expected);
}

TEST(Forward, TokenOutsideVocabularyIsAnError) {
    Checkpoint ckpt = open_checkpoint(test::fixtures_dir() / "models" / "llama_untied");
    Transformer model = load_transformer(ckpt);
    std::vector<int32_t> ids = {1, 2, 256};
    EXPECT_THROW(model.forward(ids), Error);
}
