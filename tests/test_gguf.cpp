// GGUF: dequantization of every supported GGML type against gguf-py, the real SmolLM2 model,
// and malformed or unsupported files.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/transformer.h"
#include "test_errors.h"
#include "test_paths.h"

using namespace spense;
using test::error_of;

namespace {

// Builds small GGUF files byte by byte for the error tests.
struct GgufBuilder {
    std::string bytes;
    template <typename T>
    void put(T v) { bytes.append(reinterpret_cast<const char*>(&v), sizeof v); }
    void str(const std::string& s) {
        put<uint64_t>(s.size());
        bytes += s;
    }
    // One string key (general.architecture) and one tensor of `elems` elements of ggml type `type`.
    static std::string model(uint32_t type, uint64_t elems, size_t data_bytes, const std::string& arch = "llama") {
        GgufBuilder b;
        b.bytes = "GGUF";
        b.put<uint32_t>(3);
        b.put<uint64_t>(1);  // tensors
        b.put<uint64_t>(1);  // kv
        b.str("general.architecture");
        b.put<uint32_t>(8);
        b.str(arch);
        b.str("token_embd.weight");
        b.put<uint32_t>(1);
        b.put<uint64_t>(elems);
        b.put<uint32_t>(type);
        b.put<uint64_t>(0);
        b.bytes.append((32 - b.bytes.size() % 32) % 32, '\0');
        b.bytes.append(data_bytes, '\0');
        return b.bytes;
    }
};

std::filesystem::path write_temp(const std::filesystem::path& dir, const std::string& name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return dir / name;
}

}  // namespace

TEST(Gguf, DequantizationMatchesGgufPy) {
    SafetensorsFile st = read_safetensors(test::fixtures_dir() / "models" / "ggml_quants.safetensors");
    const std::pair<const char*, DType> types[] = {{"Q8_0", DType::Q8_0}, {"Q4_0", DType::Q4_0}, {"Q4_1", DType::Q4_1},
                                                   {"Q5_0", DType::Q5_0}, {"Q5_1", DType::Q5_1}, {"Q4_K", DType::Q4_K},
                                                   {"Q5_K", DType::Q5_K}, {"Q6_K", DType::Q6_K}};
    for (auto [name, dt] : types) {
        const TensorRef& raw_t = st.tensors.at(std::string(name) + "_raw");
        const TensorRef& val_t = st.tensors.at(std::string(name) + "_values");
        std::vector<float> raw_f(size_t(raw_t.numel())), expected(size_t(val_t.numel()));
        to_f32(raw_t.dtype, raw_t.data, raw_t.numel(), raw_f.data());
        to_f32(val_t.dtype, val_t.data, val_t.numel(), expected.data());
        std::vector<uint8_t> raw(raw_f.begin(), raw_f.end());
        ASSERT_EQ(dtype_bytes(dt, int64_t(expected.size())), raw.size()) << name;
        std::vector<float> got(expected.size());
        to_f32(dt, raw.data(), int64_t(got.size()), got.data());
        for (size_t i = 0; i < got.size(); ++i)
            ASSERT_NEAR(got[i], expected[i], 1e-6f * std::max(1.0f, std::fabs(expected[i]))) << name << " element " << i;
    }
}

TEST(Gguf, SmolLM2LoadsAsLlama) {
    if (!std::filesystem::exists(test::smollm2_gguf())) GTEST_SKIP() << "SmolLM2 not fetched: run scripts/fetch_models.sh";
    Checkpoint ckpt = open_checkpoint(test::smollm2_gguf());
    ModelConfig cfg = ModelConfig::from_hf(ckpt.config, ckpt.path.string());
    EXPECT_EQ(cfg.arch, Arch::Llama);
    EXPECT_EQ(cfg.hidden, 576);
    EXPECT_EQ(cfg.intermediate, 1536);
    EXPECT_EQ(cfg.n_layers, 30);
    EXPECT_EQ(cfg.n_heads, 9);
    EXPECT_EQ(cfg.n_kv_heads, 3);
    EXPECT_EQ(cfg.vocab, 49152);
    EXPECT_TRUE(cfg.tie_embeddings);
    EXPECT_DOUBLE_EQ(cfg.rope_theta, 100000.0);
    EXPECT_EQ(ckpt.tensor("model.layers.0.mlp.down_proj.weight").shape, (std::vector<int64_t>{576, 1536}));
    EXPECT_EQ(ckpt.tensor("model.layers.0.mlp.down_proj.weight").dtype, DType::Q4_1);
    EXPECT_EQ(ckpt.tensor("model.embed_tokens.weight").dtype, DType::Q8_0);
    ASSERT_TRUE(ckpt.tokenizer);
}

TEST(Gguf, MalformedAndUnsupportedFilesGiveClearErrors) {
    auto dir = test::temp_dir("gguf-bad");
    auto open = [](const std::filesystem::path& p) { return [p] { open_checkpoint(p); }; };

    auto good = write_temp(dir, "good.gguf", GgufBuilder::model(0, 32, 128));
    EXPECT_NO_THROW(GgufFile::open(good));

    std::string msg = error_of(open(write_temp(dir, "q2k.gguf", GgufBuilder::model(10, 256, 84))));
    EXPECT_NE(msg.find("Q2_K"), std::string::npos) << msg;
    EXPECT_NE(msg.find("token_embd.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("q2k.gguf"), std::string::npos) << msg;

    std::string full = GgufBuilder::model(0, 32, 128);
    msg = error_of(open(write_temp(dir, "truncated.gguf", full.substr(0, full.size() - 10))));
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    msg = error_of(open(write_temp(dir, "cut_header.gguf", full.substr(0, 40))));
    EXPECT_NE(msg.find("truncated GGUF"), std::string::npos) << msg;

    std::string huge = full;
    uint64_t lie = uint64_t(1) << 50;
    std::memcpy(&huge[8], &lie, 8);  // tensor count
    msg = error_of(open(write_temp(dir, "huge_count.gguf", huge)));
    EXPECT_NE(msg.find("corrupt GGUF"), std::string::npos) << msg;

    msg = error_of(open(write_temp(dir, "gpt2.gguf", GgufBuilder::model(0, 32, 128, "gpt2"))));
    EXPECT_NE(msg.find("architecture 'gpt2'"), std::string::npos) << msg;

    msg = error_of([&] { GgufFile::open(write_temp(dir, "magic.gguf", "GGML" + full.substr(4))); });
    EXPECT_NE(msg.find("bad magic"), std::string::npos) << msg;
    std::filesystem::remove_all(dir);
}

// The real model end to end against transformers' own GGUF dequantization (Q4_1, Q8_0, F32) and
// its q/k un-permutation: every position's argmax and logsumexp, and the last position's logits.
TEST(Gguf, SmolLM2LogitsMatchTransformers) {
    if (!std::filesystem::exists(test::smollm2_gguf())) GTEST_SKIP() << "SmolLM2 not fetched: run scripts/fetch_models.sh";
    SafetensorsFile ref = read_safetensors(test::fixtures_dir() / "models" / "smollm2_reference.safetensors");
    auto decode = [&](const char* name) {
        const TensorRef& t = ref.tensors.at(name);
        std::vector<float> v(static_cast<size_t>(t.numel()));
        to_f32(t.dtype, t.data, t.numel(), v.data());
        return v;
    };
    std::vector<float> idf = decode("input_ids"), argmax = decode("argmax"), lse = decode("logsumexp"), last = decode("last_logits");
    std::vector<int32_t> ids(idf.begin(), idf.end());
    Transformer model = load_transformer(open_checkpoint(test::smollm2_gguf()));
    Matrix logits = model.forward(ids);
    double diff = 0, scale = 0;
    for (int64_t t = 0; t < logits.rows; ++t) {
        const float* z = logits.row(t);
        EXPECT_EQ(std::max_element(z, z + logits.cols) - z, int64_t(argmax[size_t(t)])) << "position " << t;
        double mx = *std::max_element(z, z + logits.cols), sum = 0;
        for (int64_t c = 0; c < logits.cols; ++c) sum += std::exp(double(z[c]) - mx);
        EXPECT_NEAR(mx + std::log(sum), lse[size_t(t)], 1e-3 * std::fabs(lse[size_t(t)])) << "position " << t;
    }
    const float* z = logits.row(logits.rows - 1);
    for (size_t c = 0; c < last.size(); ++c) {
        diff = std::max(diff, double(std::fabs(z[c] - last[c])));
        scale = std::max(scale, double(std::fabs(last[c])));
    }
    EXPECT_LT(diff / scale, 1e-4);
}
