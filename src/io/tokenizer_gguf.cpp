// Tokenizers embedded in GGUF files (keys tokenizer.ggml.*), read as llama.cpp reads them:
//  - model "gpt2": byte-level BPE. Its pre-tokenizer regexes are chosen by tokenizer.ggml.pre and
//    applied in sequence, each splitting what the previous left (llama.cpp's llama-vocab.cpp). The
//    vocabulary becomes a tokenizer.json run by the HF pipeline, which is also what to_hf_json gives.
//  - model "llama": score-ranked SentencePiece BPE (tokenizer_spm.h).
// Token types: 2 unknown, 3 control, 4 user-defined (all three matched literally in text), 6 byte.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "io/tokenizer_hf.h"
#include "io/tokenizer_spm.h"
#include "io/tokenizer_text.h"

namespace spense {

namespace {

using nlohmann::json;

constexpr const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr const char* kLlama3Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct PreTokenizer {
    std::vector<std::string> regexes;
    bool ignore_merges = false;  // llama.cpp sets it for Llama 3's vocabulary
};

std::optional<PreTokenizer> pre_tokenizer_for(const std::string& pre) {
    if (pre == "default")
        return PreTokenizer{{R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Regex, R"(\p{N}+)", "[0-9][0-9][0-9]"}};
    if (pre == "gpt2" || pre == "gpt-2") return PreTokenizer{{kGpt2Regex}};
    if (pre == "smollm") return PreTokenizer{{R"(\p{N})", kGpt2Regex}};
    if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") return PreTokenizer{{kLlama3Regex}, true};
    if (pre == "qwen2") return PreTokenizer{{kQwen2Regex}};
    return std::nullopt;
}

std::optional<int32_t> optional_id(const GgufFile& g, const std::string& key, size_t n_tokens) {
    if (!g.has(key)) return std::nullopt;
    int64_t id = g.get_int(key);
    if (id < 0 || size_t(id) >= n_tokens)
        fail(g.path(), ": GGUF key '", key, "' = ", id, " is outside the vocabulary of ", n_tokens, " tokens");
    return int32_t(id);
}

bool bool_or(const GgufFile& g, const std::string& key, bool fallback) {
    if (!g.has(key)) return fallback;
    const json& v = g.metadata().at(key);
    if (!v.is_boolean()) fail(g.path(), ": GGUF key '", key, "' is not a bool");
    return v.get<bool>();
}

std::vector<std::string> string_array(const GgufFile& g, const std::string& key) {
    std::vector<std::string> out;
    for (const json& v : g.get_array(key)) {
        if (!v.is_string()) fail(g.path(), ": GGUF key '", key, "' is not an array of strings");
        out.push_back(v.get<std::string>());
    }
    return out;
}

// Token types, or none where the file has no tokenizer.ggml.token_type.
std::vector<int64_t> token_types(const GgufFile& g, size_t n_tokens) {
    std::vector<int64_t> out;
    if (!g.has("tokenizer.ggml.token_type")) return out;
    for (const json& v : g.get_array("tokenizer.ggml.token_type")) {
        if (!v.is_number_integer()) fail(g.path(), ": GGUF key 'tokenizer.ggml.token_type' is not an array of integers");
        out.push_back(v.get<int64_t>());
    }
    if (out.size() != n_tokens)
        fail(g.path(), ": tokenizer.ggml.token_type has ", out.size(), " entries for ", n_tokens, " tokens");
    return out;
}

std::unique_ptr<Tokenizer> load_gpt2(const GgufFile& g, const std::vector<std::string>& tokens) {
    const std::string pre = g.has("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : "default";
    auto spec = pre_tokenizer_for(pre);
    if (!spec)
        fail(g.path(), ": tokenizer.ggml.pre '", pre, "' is not supported (spense knows default, gpt2, smollm, ",
             "llama-bpe, qwen2)");
    const auto types = token_types(g, tokens.size());

    json vocab = json::object();
    for (size_t i = 0; i < tokens.size(); ++i)
        if (!vocab.contains(tokens[i])) vocab[tokens[i]] = i;
    json merges = json::array();
    for (const std::string& m : string_array(g, "tokenizer.ggml.merges")) {
        // Split at the first space after the first byte, as llama.cpp does.
        size_t sp = m.find(' ', 1);
        if (sp == std::string::npos) fail(g.path(), ": tokenizer.ggml.merges entry '", m, "' has no space");
        merges.push_back({m.substr(0, sp), m.substr(sp + 1)});
    }
    json added = json::array();
    for (size_t i = 0; i < types.size(); ++i)
        if (types[i] == 2 || types[i] == 3 || types[i] == 4)
            added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false}, {"lstrip", false},
                             {"rstrip", false}, {"normalized", false}, {"special", types[i] != 4}});

    json pretok = json::array();
    for (const std::string& r : spec->regexes)
        pretok.push_back({{"type", "Split"}, {"pattern", {{"Regex", r}}}, {"behavior", "Isolated"}, {"invert", false}});
    pretok.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}});

    const auto bos = optional_id(g, "tokenizer.ggml.bos_token_id", tokens.size());
    const auto eos = optional_id(g, "tokenizer.ggml.eos_token_id", tokens.size());
    const bool add_bos = bool_or(g, "tokenizer.ggml.add_bos_token", false) && bos;
    auto seq = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
    json single = json::array(), pair = json::array(), specials = json::object();
    if (add_bos) {
        const std::string& b = tokens[size_t(*bos)];
        single.push_back({{"SpecialToken", {{"id", b}, {"type_id", 0}}}});
        pair.push_back(single.back());
        specials[b] = {{"id", b}, {"ids", {*bos}}, {"tokens", {b}}};
    }
    single.push_back(seq("A", 0));
    pair.push_back(seq("A", 0));
    pair.push_back(seq("B", 1));

    json tokenizer = {
        {"version", "1.0"},
        {"truncation", nullptr},
        {"padding", nullptr},
        {"added_tokens", added},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", pretok}}},
        {"post_processor", {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}}},
        {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
        {"model",
         {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", spec->ignore_merges},
          {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}}}};
    json config = {{"add_bos_token", add_bos},
                   {"bos_token", bos ? json(tokens[size_t(*bos)]) : json(nullptr)},
                   {"eos_token", eos ? json(tokens[size_t(*eos)]) : json(nullptr)}};
    return tok::make_hf_tokenizer(std::move(tokenizer), g.path(), config);
}

std::unique_ptr<Tokenizer> load_llama(const GgufFile& g, std::vector<std::string> tokens) {
    const size_t n = tokens.size();
    tok::SpmVocab v;
    for (const json& s : g.get_array("tokenizer.ggml.scores")) {
        if (!s.is_number()) fail(g.path(), ": GGUF key 'tokenizer.ggml.scores' is not an array of numbers");
        v.scores.push_back(s.get<float>());
    }
    if (v.scores.size() != n) fail(g.path(), ": tokenizer.ggml.scores has ", v.scores.size(), " entries for ", n, " tokens");
    const auto types = token_types(g, n);
    for (size_t i = 0; i < n; ++i) {
        int64_t t = types.empty() ? 1 : types[i];
        // Without types llama.cpp still finds byte pieces by their "<0xXX>" text.
        if (types.empty() && tok::parse_byte_token(tokens[i])) t = 6;
        v.kinds.push_back(t >= 2 && t <= 6 ? tok::PieceKind(t) : tok::PieceKind::Normal);
    }
    v.pieces = std::move(tokens);

    tok::SpmOptions opt;
    opt.add_dummy_prefix = bool_or(g, "tokenizer.ggml.add_space_prefix", true);
    opt.bos = g.has("tokenizer.ggml.bos_token_id") ? optional_id(g, "tokenizer.ggml.bos_token_id", n) : std::optional<int32_t>(1);
    opt.eos = g.has("tokenizer.ggml.eos_token_id") ? optional_id(g, "tokenizer.ggml.eos_token_id", n) : std::optional<int32_t>(2);
    opt.add_bos = bool_or(g, "tokenizer.ggml.add_bos_token", true);
    return tok::make_spm_tokenizer(std::move(v), std::move(opt), g.path());
}

}  // namespace

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const GgufFile& gguf) {
    const std::string model = gguf.get_string("tokenizer.ggml.model");
    std::vector<std::string> tokens = string_array(gguf, "tokenizer.ggml.tokens");
    if (tokens.empty()) fail(gguf.path(), ": tokenizer.ggml.tokens is empty");
    if (model == "gpt2") return load_gpt2(gguf, tokens);
    if (model == "llama") return load_llama(gguf, std::move(tokens));
    fail(gguf.path(), ": tokenizer.ggml.model '", model, "' is not supported (spense reads gpt2 and llama)");
}

}  // namespace spense
