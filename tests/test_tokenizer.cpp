// Tokenizers against independent references: ids and decoded text recorded from HF `tokenizers`,
// SentencePiece and SmolLM2's own tokenizer definition by tests/fixtures/tokenizer/make_fixtures.py
// (see its docstring for versions and for how the to_hf_json exports were checked with HF).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "test_paths.h"

namespace spense {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

fs::path fixture_dir() { return test::fixtures_dir() / "tokenizer"; }
fs::path tok512_bin() { return test::shared_dir() / "models" / "stories260K" / "tok512.bin"; }

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_file(const fs::path& p, std::string_view data) {
    std::ofstream out(p, std::ios::binary);
    out.write(data.data(), std::streamsize(data.size()));
}

const json& expected() {
    static const json j = json::parse(read_file(fixture_dir() / "expected.json"));
    return j;
}

std::string from_hex(const std::string& hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
    return out;
}

// The fixture texts by name: hard cases, and slices of the shared text files (absent without them).
const std::map<std::string, std::string>& texts() {
    static const std::map<std::string, std::string> t = [] {
        std::map<std::string, std::string> m;
        for (const json& r : expected().at("texts"))
            m[r.at("name")] = r.contains("hex") ? from_hex(r.at("hex")) : r.at("text").get<std::string>();
        for (const json& s : expected().at("slices")) {
            fs::path p = test::shared_dir() / "data" / s.at("file").get<std::string>();
            if (!fs::exists(p)) continue;
            std::string data = read_file(p);
            EXPECT_EQ(data.size(), s.at("file_size").get<size_t>()) << p << " is not the file the fixtures were made from";
            size_t b = s.at("begin"), e = s.at("end");
            m[s.at("name")] = data.substr(b, e - b);
        }
        return m;
    }();
    return t;
}

std::string fnv1a64(const std::vector<int32_t>& ids) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (int32_t id : ids) {
        unsigned char b[4];
        std::memcpy(b, &id, 4);  // little endian, as the fixture script packs them
        for (unsigned char c : b) h = (h ^ c) * 0x100000001B3ull;
    }
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

// Checks every expected-id case of `key` (ids, and decoded text where recorded); returns how many ran.
int expect_cases(const Tokenizer& tok, const std::string& key, const std::set<std::string>& skip = {}) {
    const json& c = expected().at("cases").at(key);
    int n = 0;
    for (const auto& [name, ids] : c.at("ids").items()) {
        auto it = texts().find(name);
        if (it == texts().end() || skip.count(name)) continue;
        EXPECT_EQ(tok.encode(it->second), ids.get<std::vector<int32_t>>()) << key << " / " << name;
        if (c.contains("decoded")) {
            EXPECT_EQ(tok.decode(ids.get<std::vector<int32_t>>()), c.at("decoded").at(name).get<std::string>())
                << key << " / " << name << " (decode)";
        }
        ++n;
    }
    std::printf("[   INFO   ] %s: %d expected-id cases\n", key.c_str(), n);
    return n;
}

// Encodes the shared files that `key` has whole-file hashes for; returns the seconds per file.
std::map<std::string, double> expect_whole_files(const Tokenizer& tok, const std::string& key) {
    std::map<std::string, double> seconds;
    const json& c = expected().at("cases").at(key);
    if (!c.contains("whole")) return seconds;
    for (const json& f : expected().at("whole_files")) {
        fs::path p = test::shared_dir() / "data" / f.at("file").get<std::string>();
        if (!fs::exists(p)) continue;
        const std::string data = read_file(p);
        auto t0 = std::chrono::steady_clock::now();
        std::vector<int32_t> ids = tok.encode(data);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const json& h = c.at("whole").at(f.at("name").get<std::string>());
        EXPECT_EQ(ids.size(), h.at("count").get<size_t>()) << key << " / whole " << p;
        EXPECT_EQ(fnv1a64(ids), h.at("fnv1a64").get<std::string>()) << key << " / whole " << p;
        std::printf("[   INFO   ] %s: %s (%zu bytes) -> %zu ids in %.3f s\n", key.c_str(), p.filename().c_str(),
                    data.size(), ids.size(), s);
        seconds[f.at("name")] = s;
    }
    return seconds;
}

// A fixture tokenizer.json with the edits of expected.json's variant `key` applied (JSON pointers).
json variant_json(const std::string& key) {
    const json& v = expected().at("variants").at(key);
    json j = json::parse(read_file(fixture_dir() / v.at("base").get<std::string>()));
    for (const auto& [pointer, value] : v.at("set").items()) j[json::json_pointer(pointer)] = value;
    return j;
}

std::unique_ptr<Tokenizer> load_json(const json& j, const std::string& tag) {
    fs::path dir = test::temp_dir("tok-" + tag);
    write_file(dir / "tokenizer.json", j.dump());
    return load_hf_tokenizer(dir / "tokenizer.json");
}

void expect_error(const std::function<void()>& f, std::initializer_list<std::string> parts) {
    try {
        f();
        ADD_FAILURE() << "no error raised";
    } catch (const Error& e) {
        std::string msg = e.what();
        for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line error: " << msg;
    }
}

// Texts whose decode(encode(x)) is x itself: no literal special tokens (decode drops them), no
// added tokens that swallow spaces or decode differently (the fixture's "café"), valid UTF-8.
std::vector<std::string> round_trip_texts() {
    static const std::set<std::string> excluded = {"chat", "added_tokens", "spm_specials", "invalid_utf8", "accents_nfc"};
    std::vector<std::string> out;
    for (const auto& [name, t] : texts())
        if (!excluded.count(name)) out.push_back(t);
    return out;
}

// SentencePiece's remove_extra_whitespaces: no leading or trailing spaces, inner runs of spaces as one.
std::string squeeze_spaces(const std::string& t) {
    std::string out;
    for (char c : t)
        if (c != ' ' || (!out.empty() && out.back() != ' ')) out += c;
    while (out.ends_with(' ')) out.pop_back();
    return out;
}

// encode_for_model adds BOS only; an EOS that the post-processor appends (Roberta) is left out.
std::vector<int32_t> expected_for_model(const Tokenizer& tok, std::vector<int32_t> with_special,
                                        const std::vector<int32_t>& plain) {
    if (with_special.size() == plain.size() + (tok.add_bos() ? 2 : 1) && tok.eos_id() == with_special.back())
        with_special.pop_back();
    return with_special;
}

#define SKIP_WITHOUT(path, what)                                                          \
    do {                                                                                  \
        if (!fs::exists(path)) GTEST_SKIP() << (path) << " not found: " << (what);        \
    } while (0)

// ---------------------------------------------------------------- HF tokenizer.json

TEST(TokenizerHf, ByteLevelLlama3StyleMatchesReference) {
    auto tok = load_hf_tokenizer(fixture_dir() / "bytelevel.tokenizer.json");
    const json& c = expected().at("cases").at("hf_bytelevel");
    EXPECT_EQ(tok->vocab_size(), c.at("vocab_size").get<int32_t>());
    EXPECT_EQ(tok->bos_id(), 0);
    EXPECT_TRUE(tok->add_bos());
    EXPECT_EQ(tok->encode_for_model(texts().at("hello")), c.at("with_special").at("hello").get<std::vector<int32_t>>());
    expect_cases(*tok, "hf_bytelevel");
    expect_whole_files(*tok, "hf_bytelevel");
}

TEST(TokenizerHf, SentencePieceStyleMatchesReference) {
    auto tok = load_hf_tokenizer(fixture_dir() / "spm.tokenizer.json");
    const json& c = expected().at("cases").at("hf_spm");
    EXPECT_EQ(tok->vocab_size(), 512);
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_TRUE(tok->add_bos());
    EXPECT_EQ(tok->encode_for_model(texts().at("hello")), c.at("with_special").at("hello").get<std::vector<int32_t>>());
    expect_cases(*tok, "hf_spm");
    expect_whole_files(*tok, "hf_spm");
}

// GPT-2, Qwen2 and SmolLM pre-tokenizers, NFC/NFD/NFKC and Replace normalizers, every Split behavior,
// inverted splits, Metaspace (current and pre-0.14 forms), Roberta and ByteLevel post-processors.
TEST(TokenizerHf, VariantsMatchReference) {
    for (const auto& [key, v] : expected().at("variants").items()) {
        SCOPED_TRACE(key);
        auto tok = load_json(variant_json(key), key);
        const json& c = expected().at("cases").at(key);
        EXPECT_EQ(tok->vocab_size(), c.at("vocab_size").get<int32_t>());
        EXPECT_EQ(tok->encode_for_model(texts().at("hello")),
                  expected_for_model(*tok, c.at("with_special").at("hello"), c.at("ids").at("hello")));
        expect_cases(*tok, key);
    }
}

// Tokenizers keep per-thread scratch space; several threads encoding at once get the same ids.
TEST(TokenizerHf, ConcurrentEncodingIsDeterministic) {
    auto tok = load_hf_tokenizer(fixture_dir() / "bytelevel.tokenizer.json");
    std::vector<std::vector<int32_t>> want;
    for (const auto& [name, t] : texts()) want.push_back(tok->encode(t));
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int k = 0; k < 4; ++k)
        threads.emplace_back([&, k] {
            for (int rep = 0; rep < 5; ++rep) {
                size_t i = 0;
                for (const auto& [name, t] : texts()) mismatches[size_t(k)] += tok->encode(t) != want[i++];
            }
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(TokenizerHf, ByteLevelRoundTripIsExact) {
    auto tok = load_hf_tokenizer(fixture_dir() / "bytelevel.tokenizer.json");
    for (const std::string& t : round_trip_texts()) EXPECT_EQ(tok->decode(tok->encode(t)), t);
}

TEST(TokenizerHf, TokenizerConfigOverridesPostProcessor) {
    fs::path dir = test::temp_dir("tok-config");
    fs::copy_file(fixture_dir() / "bytelevel.tokenizer.json", dir / "tokenizer.json");
    write_file(dir / "tokenizer_config.json",
               R"({"add_bos_token": false, "bos_token": {"content": "<|im_start|>", "__type": "AddedToken"},
                   "eos_token": "<|end_of_text|>"})");
    auto tok = load_hf_tokenizer(dir / "tokenizer.json");
    EXPECT_FALSE(tok->add_bos());
    EXPECT_EQ(tok->bos_id(), tok->encode("<|im_start|>").at(0));
    EXPECT_EQ(tok->eos_id(), 1);
    EXPECT_EQ(tok->encode_for_model("Hello"), tok->encode("Hello"));

    write_file(dir / "tokenizer_config.json", R"({"eos_token": "<|no such token|>"})");
    expect_error([&] { load_hf_tokenizer(dir / "tokenizer.json"); }, {"tokenizer.json", "<|no such token|>"});
}

TEST(TokenizerHf, BadFilesNameTheFileAndTheProblem) {
    fs::path dir = test::temp_dir("tok-bad");
    expect_error([&] { load_hf_tokenizer(dir / "missing.json"); }, {"missing.json"});

    write_file(dir / "tokenizer.json", "{ this is not json");
    expect_error([&] { load_hf_tokenizer(dir / "tokenizer.json"); }, {(dir / "tokenizer.json").string(), "not valid JSON"});

    json base = json::parse(read_file(fixture_dir() / "bytelevel.tokenizer.json"));
    auto with = [&](const std::string& pointer, json value) {
        json j = base;
        j[json::json_pointer(pointer)] = std::move(value);
        write_file(dir / "tokenizer.json", j.dump());
        return dir / "tokenizer.json";
    };
    expect_error([&] { load_hf_tokenizer(with("/model/type", "WordPiece")); }, {"tokenizer.json", "WordPiece"});
    expect_error([&] { load_hf_tokenizer(with("/model/type", "Unigram")); }, {"tokenizer.json", "Unigram"});
    expect_error([&] { load_hf_tokenizer(with("/normalizer", {{"type", "Lowercase"}})); }, {"tokenizer.json", "Lowercase"});
    expect_error([&] { load_hf_tokenizer(with("/pre_tokenizer", {{"type", "Whitespace"}})); },
                 {"tokenizer.json", "Whitespace"});
    expect_error([&] { load_hf_tokenizer(with("/decoder", {{"type", "WordPiece"}})); }, {"tokenizer.json", "WordPiece"});
    expect_error([&] { load_hf_tokenizer(with("/model/merges/0", json::array({"no such", "tokens"}))); },
                 {"tokenizer.json", "no such"});
    expect_error([&] {
        load_hf_tokenizer(with("/pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                                                  {"behavior", "Isolated"}}));
    }, {"tokenizer.json", "(unclosed"});
}

// ---------------------------------------------------------------- llama2.c tokenizer.bin

TEST(TokenizerLlama2c, Tok512MatchesSentencePiece) {
    SKIP_WITHOUT(tok512_bin(), "the shared models");
    auto tok = load_llama2c_tokenizer(tok512_bin());  // tok512.model beside it: SentencePiece's normalizer flags
    EXPECT_EQ(tok->vocab_size(), 512);
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_EQ(tok->eos_id(), 2);
    EXPECT_TRUE(tok->add_bos());
    expect_cases(*tok, "sentencepiece_tok512");
    expect_whole_files(*tok, "sentencepiece_tok512");
    // SentencePiece reads "<s>" in text as characters; spense matches control pieces literally, as
    // HF's tokenizer.json for this vocabulary does (expected ids from the HF fixture).
    EXPECT_EQ(tok->encode("<s>Hello</s>"), (std::vector<int32_t>{1, 346, 306, 414, 2}));
    std::vector<int32_t> ids = tok->encode_for_model("Once upon a time");
    EXPECT_EQ(ids.front(), 1);
    EXPECT_EQ(tok->decode(ids), "Once upon a time");
    // Round trip: SentencePiece's normalization, which squeezes spaces, is all that is lost.
    for (const std::string& t : round_trip_texts()) EXPECT_EQ(tok->decode(tok->encode(t)), squeeze_spaces(t));
}

// Without the .model, run.c's behaviour: the dummy prefix always, whitespace kept as written. That
// is what HF's Llama tokenizer.json (the hf_spm fixture) does with this vocabulary.
TEST(TokenizerLlama2c, BinAloneEncodesLikeRunC) {
    SKIP_WITHOUT(tok512_bin(), "the shared models");
    fs::path dir = test::temp_dir("tok-bin-only");
    fs::copy_file(tok512_bin(), dir / "tok512.bin");
    auto tok = load_llama2c_tokenizer(dir / "tok512.bin");
    expect_cases(*tok, "hf_spm");
    expect_whole_files(*tok, "hf_spm");
    // Round trip: exact (decode drops the dummy-prefix space that encode added).
    for (const std::string& t : round_trip_texts()) EXPECT_EQ(tok->decode(tok->encode(t)), t);
}

TEST(TokenizerLlama2c, BadFilesNameTheFileAndTheProblem) {
    fs::path dir = test::temp_dir("tok-bin-bad");
    expect_error([&] { load_llama2c_tokenizer(dir / "missing.bin"); }, {"missing.bin"});
    SKIP_WITHOUT(tok512_bin(), "the shared models");
    const std::string good = read_file(tok512_bin());
    write_file(dir / "cut.bin", good.substr(0, good.size() - 3));
    expect_error([&] { load_llama2c_tokenizer(dir / "cut.bin"); }, {"cut.bin", "truncated", "token 511"});
    write_file(dir / "cut_header.bin", good.substr(0, 4 + 8 + 5 + 6));  // inside token 1's header
    expect_error([&] { load_llama2c_tokenizer(dir / "cut_header.bin"); }, {"cut_header.bin", "truncated", "token 1"});
    std::string bad = good;
    int32_t huge = 1 << 30;
    std::memcpy(bad.data() + 4 + 4, &huge, 4);  // token 0's length
    write_file(dir / "bad.bin", bad);
    expect_error([&] { load_llama2c_tokenizer(dir / "bad.bin"); }, {"bad.bin", "corrupt", "length 1073741824"});
    write_file(dir / "empty.bin", "");
    expect_error([&] { load_llama2c_tokenizer(dir / "empty.bin"); }, {"empty.bin"});
}

// ---------------------------------------------------------------- GGUF

// A GGUF file holding metadata only (no tensors), for tokenizer tests.
class GgufWriter {
public:
    void str(const std::string& key, const std::string& v) {
        head(key, 8);
        put_str(v);
    }
    void u32(const std::string& key, uint32_t v) {
        head(key, 4);
        put(v);
    }
    void boolean(const std::string& key, bool v) {
        head(key, 7);
        put(uint8_t(v));
    }
    void strings(const std::string& key, const std::vector<std::string>& v) {
        array(key, 8, v.size());
        for (const auto& s : v) put_str(s);
    }
    void f32s(const std::string& key, const std::vector<float>& v) {
        array(key, 6, v.size());
        for (float f : v) put(f);
    }
    void i32s(const std::string& key, const std::vector<int32_t>& v) {
        array(key, 5, v.size());
        for (int32_t i : v) put(i);
    }
    void write(const fs::path& p) const {
        std::string out = "GGUF";
        auto app = [&](auto v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
        app(uint32_t(3));
        app(uint64_t(0));
        app(n_);
        write_file(p, out + kv_);
    }

private:
    template <typename T>
    void put(T v) {
        kv_.append(reinterpret_cast<const char*>(&v), sizeof(v));
    }
    void put_str(const std::string& s) {
        put(uint64_t(s.size()));
        kv_ += s;
    }
    void head(const std::string& key, uint32_t type) {
        put_str(key);
        put(type);
        ++n_;
    }
    void array(const std::string& key, uint32_t elem, size_t n) {
        head(key, 9);
        put(elem);
        put(uint64_t(n));
    }
    std::string kv_;
    uint64_t n_ = 0;
};

// tok512.bin's vocabulary as a GGUF "llama" tokenizer, the way llama.cpp's converter writes one.
fs::path write_tok512_gguf(const fs::path& dir) {
    const std::string bin = read_file(tok512_bin());
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    for (size_t pos = 4; pos < bin.size();) {
        float score;
        int32_t len;
        std::memcpy(&score, bin.data() + pos, 4);
        std::memcpy(&len, bin.data() + pos + 4, 4);
        std::string t = bin.substr(pos + 8, size_t(len));
        pos += 8 + size_t(len);
        size_t id = tokens.size();
        if (id == 1 || id == 2) t = id == 1 ? "<s>" : "</s>";  // the .bin writes "\n<s>\n" for run.c's printing
        types.push_back(id == 0 ? 2 : id <= 2 ? 3 : (t.size() == 6 && t.starts_with("<0x")) ? 6 : 1);
        std::string piece;
        for (char c : t) piece += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
        tokens.push_back(piece);
        scores.push_back(score);
    }
    GgufWriter w;
    w.str("general.architecture", "llama");
    w.str("tokenizer.ggml.model", "llama");
    w.strings("tokenizer.ggml.tokens", tokens);
    w.f32s("tokenizer.ggml.scores", scores);
    w.i32s("tokenizer.ggml.token_type", types);
    w.u32("tokenizer.ggml.bos_token_id", 1);
    w.u32("tokenizer.ggml.eos_token_id", 2);
    w.u32("tokenizer.ggml.unknown_token_id", 0);
    w.boolean("tokenizer.ggml.add_bos_token", true);
    w.boolean("tokenizer.ggml.add_space_prefix", true);
    w.write(dir / "tok512.gguf");
    return dir / "tok512.gguf";
}

TEST(TokenizerGguf, SmolLM2MatchesItsTokenizer) {
    SKIP_WITHOUT(test::smollm2_gguf(), "run scripts/fetch_models.sh");
    GgufFile g = GgufFile::open(test::smollm2_gguf());
    auto t0 = std::chrono::steady_clock::now();
    auto tok = load_gguf_tokenizer(g);
    std::printf("[   INFO   ] smollm2_gguf: tokenizer loaded in %.3f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    const json& c = expected().at("cases").at("smollm2_gguf");
    EXPECT_EQ(tok->vocab_size(), c.at("vocab_size").get<int32_t>());
    EXPECT_EQ(tok->bos_id(), c.at("bos").get<int32_t>());
    EXPECT_EQ(tok->eos_id(), c.at("eos").get<int32_t>());
    EXPECT_EQ(tok->add_bos(), c.at("add_bos").get<bool>());
    EXPECT_EQ(tok->encode_for_model(texts().at("hello")), c.at("with_special").at("hello").get<std::vector<int32_t>>());
    expect_cases(*tok, "smollm2_gguf");
    for (const auto& [file, s] : expect_whole_files(*tok, "smollm2_gguf"))
        EXPECT_LT(s, 5.0) << "encoding " << file << " is pathologically slow";
    for (const std::string& t : round_trip_texts()) EXPECT_EQ(tok->decode(tok->encode(t)), t);
}

TEST(TokenizerGguf, LlamaVocabularyEncodesLikeLlamaCpp) {
    SKIP_WITHOUT(tok512_bin(), "the shared models");
    fs::path dir = test::temp_dir("tok-gguf-llama");
    GgufFile g = GgufFile::open(write_tok512_gguf(dir));
    auto tok = load_gguf_tokenizer(g);
    EXPECT_EQ(tok->vocab_size(), 512);
    EXPECT_TRUE(tok->add_bos());
    EXPECT_EQ(tok->encode_for_model("Hello world"), (std::vector<int32_t>{1, 346, 306, 414, 263, 304, 341}));
    expect_cases(*tok, "hf_spm");  // llama.cpp: dummy prefix, no whitespace squeezing, as HF's Llama tokenizer
}

TEST(TokenizerGguf, UnsupportedTokenizersNameTheProblem) {
    fs::path dir = test::temp_dir("tok-gguf-bad");
    auto write = [&](const std::string& model, const std::string& pre) {
        GgufWriter w;
        w.str("tokenizer.ggml.model", model);
        if (!pre.empty()) w.str("tokenizer.ggml.pre", pre);
        w.strings("tokenizer.ggml.tokens", {"a", "b", "ab"});
        w.strings("tokenizer.ggml.merges", {"a b"});
        w.write(dir / "t.gguf");
        return GgufFile::open(dir / "t.gguf");
    };
    expect_error([&] { load_gguf_tokenizer(write("gpt2", "no-such-pre")); }, {"t.gguf", "no-such-pre"});
    expect_error([&] { load_gguf_tokenizer(write("bert", "")); }, {"t.gguf", "bert"});
    expect_error([&] { load_gguf_tokenizer(write("llama", "")); }, {"t.gguf", "tokenizer.ggml.scores"});
    auto tok = load_gguf_tokenizer(write("gpt2", "gpt2"));
    EXPECT_EQ(tok->encode("abba"), (std::vector<int32_t>{2, 1, 0}));
}

// Metadata a byte-level GGUF vocabulary carries: the pre-tokenizer (llama-bpe turns on
// ignore_merges, as in llama.cpp), control tokens matched literally, BOS and add_bos_token.
TEST(TokenizerGguf, Gpt2MetadataIsHonoured) {
    fs::path dir = test::temp_dir("tok-gguf-gpt2");
    auto write = [&](const std::string& pre, bool add_bos) {
        GgufWriter w;
        w.str("tokenizer.ggml.model", "gpt2");
        w.str("tokenizer.ggml.pre", pre);
        w.strings("tokenizer.ggml.tokens", {"a", "b", "ab", "bab", "<|x|>"});
        w.i32s("tokenizer.ggml.token_type", {1, 1, 1, 1, 3});
        w.strings("tokenizer.ggml.merges", {"a b"});
        w.u32("tokenizer.ggml.bos_token_id", 4);
        w.u32("tokenizer.ggml.eos_token_id", 4);
        w.boolean("tokenizer.ggml.add_bos_token", add_bos);
        w.write(dir / "t.gguf");
        return load_gguf_tokenizer(GgufFile::open(dir / "t.gguf"));
    };
    auto gpt2 = write("gpt2", false);
    EXPECT_EQ(gpt2->encode("bab"), (std::vector<int32_t>{1, 2}));  // no merge makes "bab"
    EXPECT_EQ(gpt2->encode("ab<|x|>b"), (std::vector<int32_t>{2, 4, 1}));
    EXPECT_EQ(gpt2->decode(std::vector<int32_t>{2, 4, 1}), "abb");
    EXPECT_FALSE(gpt2->add_bos());
    EXPECT_EQ(gpt2->eos_id(), 4);
    auto llama3 = write("llama-bpe", true);
    EXPECT_EQ(llama3->encode("bab"), (std::vector<int32_t>{3}));  // the word is a token
    EXPECT_EQ(llama3->encode_for_model("ab"), (std::vector<int32_t>{4, 2}));
}

// ---------------------------------------------------------------- to_hf_json

// Exports a tokenizer's tokenizer.json, loads it back and checks it against the source's reference
// ids. With SPENSE_TOKENIZER_EXPORT_DIR set, the files are kept there for make_fixtures.py
// --check-exports, which checks them with HF `tokenizers` itself.
void check_export(const Tokenizer& tok, const std::string& stem, const std::string& expectation) {
    const char* env = std::getenv("SPENSE_TOKENIZER_EXPORT_DIR");
    fs::path dir = env ? fs::path(env) : test::temp_dir("tok-export-" + stem);
    fs::path file = dir / (stem + ".tokenizer.json");
    write_file(file, tok.to_hf_json().dump(1));
    json meta = {{"bos", tok.bos_id() ? json(*tok.bos_id()) : json(nullptr)}, {"add_bos", tok.add_bos()}};
    write_file(dir / (stem + ".meta.json"), meta.dump());

    auto back = load_hf_tokenizer(file);
    EXPECT_EQ(back->vocab_size(), tok.vocab_size());
    EXPECT_EQ(back->add_bos(), tok.add_bos());
    if (tok.add_bos()) {
        EXPECT_EQ(back->bos_id(), tok.bos_id());
    }
    expect_cases(*back, expectation);
    expect_whole_files(*back, expectation);
}

TEST(TokenizerExport, Llama2cWithModel) {
    SKIP_WITHOUT(tok512_bin(), "the shared models");
    check_export(*load_llama2c_tokenizer(tok512_bin()), "llama2c_tok512", "sentencepiece_tok512");
}

TEST(TokenizerExport, Llama2cBinOnly) {
    SKIP_WITHOUT(tok512_bin(), "the shared models");
    fs::path dir = test::temp_dir("tok-export-bin-only");
    fs::copy_file(tok512_bin(), dir / "tok512.bin");
    check_export(*load_llama2c_tokenizer(dir / "tok512.bin"), "llama2c_tok512_bin_only", "hf_spm");
}

TEST(TokenizerExport, GgufLlama) {
    SKIP_WITHOUT(tok512_bin(), "the shared models");
    GgufFile g = GgufFile::open(write_tok512_gguf(test::temp_dir("tok-export-gguf-llama")));
    check_export(*load_gguf_tokenizer(g), "gguf_llama_tok512", "hf_spm");
}

TEST(TokenizerExport, GgufSmolLM2) {
    SKIP_WITHOUT(test::smollm2_gguf(), "run scripts/fetch_models.sh");
    check_export(*load_gguf_tokenizer(GgufFile::open(test::smollm2_gguf())), "gguf_smollm2", "smollm2_gguf");
}

TEST(TokenizerExport, HfFilesAsLoaded) {
    check_export(*load_hf_tokenizer(fixture_dir() / "bytelevel.tokenizer.json"), "hf_bytelevel", "hf_bytelevel");
    check_export(*load_hf_tokenizer(fixture_dir() / "spm.tokenizer.json"), "hf_spm", "hf_spm");
}

}  // namespace
}  // namespace spense
