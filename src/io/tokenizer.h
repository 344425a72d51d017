// Tokenizers: text <-> token ids for every checkpoint format the loader reads.
//
// One interface, three sources:
//  - HuggingFace tokenizer.json with a BPE model: byte-level BPE (GPT-2, Llama 3, Qwen2/3, SmolLM)
//    and SentencePiece-style BPE with byte fallback (Llama 2, Mistral);
//  - llama2.c tokenizer.bin (score-ranked SentencePiece BPE with <0xXX> byte tokens);
//  - vocabularies embedded in GGUF files (tokenizer.ggml.model "gpt2" or "llama").
// Rank-ordered BPE (tokenizer_bpe.h) serves tokenizer.json and GGUF "gpt2" (tokenizer_hf.h);
// score-ranked SentencePiece BPE (tokenizer_spm.h) serves tokenizer.bin and GGUF "llama".
//
// Shared behaviour: text is UTF-8, and a byte that does not start a well-formed sequence is read as
// U+FFFD (as SentencePiece and llama.cpp read it). A tokenizer is immutable once loaded; its
// methods may be called from several threads at once. Loading errors are spense::Error naming the
// file and what in it is unsupported or corrupt.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace spense {

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    // Token ids of `text`, without BOS/EOS. Special (added) tokens written literally in the text,
    // such as "<|im_start|>", map to their ids.
    virtual std::vector<int32_t> encode(std::string_view text) const = 0;
    // The text of a sequence of ids (byte tokens are joined back into UTF-8). Special tokens (BOS,
    // EOS, control tokens) are left out, as HF's decode(skip_special_tokens=True) does; an id
    // outside the vocabulary is an Error.
    virtual std::string decode(std::span<const int32_t> ids) const = 0;

    virtual int32_t vocab_size() const = 0;
    virtual std::optional<int32_t> bos_id() const = 0;
    virtual std::optional<int32_t> eos_id() const = 0;
    // Whether the model expects BOS at the start of a sequence (the HF post-processor's or GGUF's
    // add_bos_token setting).
    virtual bool add_bos() const = 0;

    // A tokenizer.json that HF `tokenizers` loads and that encodes the same way, for writing
    // checkpoints converted from llama2.c or GGUF.
    virtual nlohmann::json to_hf_json() const = 0;

    // `encode` with BOS prepended when add_bos() says so. An EOS that a post-processor would append
    // (RobertaProcessing, a template ending in a special token) is reported by eos_id() and left to
    // the caller.
    std::vector<int32_t> encode_for_model(std::string_view text) const;
};

// A tokenizer_config.json beside the file overrides the post-processor's BOS/EOS and add_bos.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json);
// Reads the SentencePiece .model of the same stem beside the file, if any, for its normalizer flags
// (see tokenizer_llama2c.cpp).
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path& tokenizer_bin);

class GgufFile;
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const GgufFile& gguf);

}  // namespace spense
