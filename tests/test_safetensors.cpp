// safetensors reading of every dtype, sharded checkpoints, exact write/read round trips, decoding
// after released pages, and malformed files (each an Error whose one-line message names the file).
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "test_paths.h"

using namespace spense;

namespace {

std::vector<float> decode(const TensorRef& t) {
    std::vector<float> out(size_t(t.numel()));
    to_f32(t.dtype, t.data, t.numel(), out.data());
    return out;
}

void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string safetensors_bytes(const std::string& header, size_t data_bytes) {
    uint64_t n = header.size();
    std::string out(reinterpret_cast<const char*>(&n), 8);
    return out + header + std::string(data_bytes, '\x01');
}

// Expects read_safetensors(path) to throw an Error whose message names the file and contains `what`.
void expect_error(const std::filesystem::path& path, const std::string& what) {
    try {
        read_safetensors(path);
        FAIL() << "no error for " << path << " (expected '" << what << "')";
    } catch (const Error& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
        EXPECT_NE(msg.find(what), std::string::npos) << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
}

}  // namespace

TEST(Safetensors, ReadsEveryDtypeAsTorchWroteIt) {
    SafetensorsFile st = read_safetensors(test::fixtures_dir() / "models" / "dtypes.safetensors");
    EXPECT_EQ(st.tensors.at("f16").dtype, DType::F16);
    EXPECT_EQ(st.tensors.at("bf16").dtype, DType::BF16);
    EXPECT_EQ(decode(st.tensors.at("f16")), decode(st.tensors.at("f16_as_f32")));
    EXPECT_EQ(decode(st.tensors.at("bf16")), decode(st.tensors.at("bf16_as_f32")));
    const TensorRef& m = st.tensors.at("matrix_bf16");
    EXPECT_EQ(m.shape, (std::vector<int64_t>{3, 4}));
    std::vector<float> v = decode(m);
    for (int i = 0; i < 12; ++i) EXPECT_EQ(v[size_t(i)], float(i));
}

TEST(Safetensors, ConversionsMatchTorchRounding) {
    // torch rounded the same float32 values to F16 and BF16; our converters must agree bit for bit.
    SafetensorsFile st = read_safetensors(test::fixtures_dir() / "models" / "dtypes.safetensors");
    std::vector<float> f32 = decode(st.tensors.at("f32"));
    const auto* f16 = reinterpret_cast<const uint16_t*>(st.tensors.at("f16").data);
    const auto* bf16 = reinterpret_cast<const uint16_t*>(st.tensors.at("bf16").data);
    for (size_t i = 0; i < f32.size(); ++i) {
        EXPECT_EQ(f32_to_f16(f32[i]), f16[i]) << f32[i];
        EXPECT_EQ(f32_to_bf16(f32[i]), bf16[i]) << f32[i];
    }
}

TEST(Safetensors, WriteReadRoundTripIsExact) {
    auto dir = test::temp_dir("st-roundtrip");
    std::vector<float> a = {1.5f, -2.25f, 3e-5f, 7.0f, -0.0f, 1e30f};
    std::vector<uint16_t> h = {0x3c00, 0xbc00, 0x0001, 0x7bff};
    std::vector<uint16_t> b = {0x3f80, 0xc000, 0x0001, 0x7f7f};
    auto copy_of = [](const void* src) { return [src](std::span<uint8_t> out) { std::memcpy(out.data(), src, out.size()); }; };
    write_safetensors(dir / "x.safetensors",
                      {{"a", DType::F32, {2, 3}, copy_of(a.data())}, {"h", DType::F16, {4}, copy_of(h.data())},
                       {"b", DType::BF16, {2, 2}, copy_of(b.data())}},
                      {{"format", "pt"}});
    SafetensorsFile st = read_safetensors(dir / "x.safetensors");
    EXPECT_EQ(st.metadata["format"], "pt");
    EXPECT_EQ(0, std::memcmp(st.tensors.at("a").data, a.data(), a.size() * 4));
    EXPECT_EQ(0, std::memcmp(st.tensors.at("h").data, h.data(), h.size() * 2));
    EXPECT_EQ(0, std::memcmp(st.tensors.at("b").data, b.data(), b.size() * 2));
    EXPECT_EQ(st.tensors.at("b").shape, (std::vector<int64_t>{2, 2}));
    std::filesystem::remove_all(dir);
}

TEST(Safetensors, ShardedCheckpointHasEveryTensorOfTheIndex) {
    auto dir = test::fixtures_dir() / "models" / "qwen3_untied_sharded";
    Checkpoint sharded = open_checkpoint(dir);
    Checkpoint single = open_checkpoint(test::fixtures_dir() / "models" / "qwen3_untied");
    EXPECT_GT(sharded.files.size(), 2u);
    ASSERT_EQ(sharded.tensors.size(), single.tensors.size());
    for (const auto& [name, t] : single.tensors) {
        ASSERT_TRUE(sharded.has(name)) << name;
        const TensorRef& s = sharded.tensor(name);
        ASSERT_EQ(s.nbytes, t.nbytes);
        EXPECT_EQ(0, std::memcmp(s.data, t.data, t.nbytes)) << name;
    }
}

TEST(Checkpoint, DecodingAgainAfterItsPagesAreReleasedGivesTheSameValues) {
    // load_f32 drops a tensor's mapped pages once decoded; they must come back as the file's.
    for (const char* name : {"qwen3_untied_sharded", "gguf_llama/model.gguf"}) {
        const Checkpoint ckpt = open_checkpoint(test::fixtures_dir() / "models" / name);
        for (const auto& [tensor, t] : ckpt.tensors) {
            const std::vector<float> first = ckpt.load_f32(tensor, t.shape), again = ckpt.load_f32(tensor, t.shape);
            ASSERT_EQ(0, std::memcmp(first.data(), again.data(), first.size() * sizeof(float))) << name << ": " << tensor;
        }
    }
}

TEST(Safetensors, MalformedFilesGiveClearErrors) {
    auto dir = test::temp_dir("st-bad");
    const std::string ok = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";

    expect_error(dir / "missing.safetensors", "cannot open");

    write_bytes(dir / "short.safetensors", "abc");
    expect_error(dir / "short.safetensors", "truncated");

    write_bytes(dir / "header_too_long.safetensors", safetensors_bytes(ok, 16).substr(0, 30));
    expect_error(dir / "header_too_long.safetensors", "header claims");

    write_bytes(dir / "truncated_data.safetensors", safetensors_bytes(ok, 10));
    expect_error(dir / "truncated_data.safetensors", "spans bytes");

    write_bytes(dir / "not_json.safetensors", safetensors_bytes("{not json", 0));
    expect_error(dir / "not_json.safetensors", "not valid JSON");

    write_bytes(dir / "lying_size.safetensors",
                safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", 16));
    expect_error(dir / "lying_size.safetensors", "needs 24 bytes");

    write_bytes(dir / "overlap.safetensors",
                safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12));
    expect_error(dir / "overlap.safetensors", "overlap");

    write_bytes(dir / "gap.safetensors", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16));
    expect_error(dir / "gap.safetensors", "gap");

    write_bytes(dir / "dtype.safetensors", safetensors_bytes(R"({"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", 16));
    expect_error(dir / "dtype.safetensors", "dtype I64");

    write_bytes(dir / "fp8.safetensors", safetensors_bytes(R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4));
    expect_error(dir / "fp8.safetensors", "dtype F8_E4M3");

    write_bytes(dir / "no_offsets.safetensors", safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2]}})", 8));
    expect_error(dir / "no_offsets.safetensors", "lacks");
    std::filesystem::remove_all(dir);
}

TEST(Checkpoint, DirectoryErrorsNameTheProblem) {
    auto dir = test::temp_dir("ckpt-bad");
    auto expect_msg = [](const std::filesystem::path& p, const std::string& what) {
        try {
            open_checkpoint(p);
            FAIL() << "no error for " << p;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
        }
    };
    expect_msg(dir / "nothing-here", "no such file");
    expect_msg(dir, "no config.json");
    write_bytes(dir / "config.json", R"({"architectures": ["GPT2LMHeadModel"]})");
    expect_msg(dir, "no model.safetensors");
    write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": {"w": "model-00001-of-00002.safetensors"}})");
    expect_msg(dir, "model-00001-of-00002.safetensors: cannot open");
    std::filesystem::remove_all(dir);
}

TEST(Config, UnsupportedArchitectureIsRefusedByName) {
    nlohmann::json c = {{"architectures", {"GPT2LMHeadModel"}}, {"hidden_size", 8}};
    try {
        ModelConfig::from_hf(c, "x/config.json");
        FAIL();
    } catch (const Error& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("GPT2LMHeadModel"), std::string::npos) << msg;
        EXPECT_NE(msg.find("x/config.json"), std::string::npos) << msg;
    }
}
