// HF tokenizers' tokenizer.json with a BPE model, run the way HF runs it:
//  1. added tokens are split out of the raw text (those with normalized=false), the rest is
//     normalized (NFC/NFD/NFKC/NFKD, Prepend, Replace, Sequence) and split again on the added tokens
//     with normalized=true (matched in normalized form);
//  2. each run is pre-tokenized (ByteLevel, Split, Digits, Metaspace, Sequence) and every pre-token
//     goes through the rank-ordered BPE model (tokenizer_bpe.h);
//  3. decoding drops special added tokens and runs the decoder chain (ByteLevel, Replace,
//     ByteFallback, Fuse, Strip, Metaspace, Sequence).
// BOS/EOS come from the post-processor (TemplateProcessing, RobertaProcessing, BertProcessing,
// ByteLevel, Sequence); a config in the form of tokenizer_config.json overrides them. Anything else
// in the file is an error naming it; regexes are PCRE2's reading of the pattern HF gives Oniguruma.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "io/tokenizer.h"

namespace spense::tok {

// `config` uses tokenizer_config.json's keys: add_bos_token (bool), bos_token and eos_token (token
// text, {"content": text}, or null for none); absent keys leave the post-processor's word. `source`
// names the file in error messages. to_hf_json() returns `tokenizer_json` as given.
std::unique_ptr<Tokenizer> make_hf_tokenizer(nlohmann::json tokenizer_json, std::string source,
                                             const nlohmann::json& config);

}  // namespace spense::tok
