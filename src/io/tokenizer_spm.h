// Score-ranked SentencePiece BPE, for llama2.c tokenizer.bin files and GGUF "llama" vocabularies.
//
// Encoding, as SentencePiece, llama2.c's run.c and llama.cpp do it: control, unknown and
// user-defined pieces written literally in the text are matched first (longest match); each run of
// plain text is normalized (optionally squeezing spaces, then a dummy-prefix space, spaces written as
// the vocabulary writes them), split into characters, and the adjacent pair whose concatenation is a
// normal piece with the highest score is merged (ties: leftmost) until none is left. A character
// that is no piece becomes its <0xXX> byte pieces, or unk without them.
//
// Decoding skips control and unknown pieces, joins byte pieces back into UTF-8 (an invalid run gives
// one U+FFFD per byte), writes spaces back and drops the dummy-prefix space at the start: HF's
// Llama decoder (Replace, ByteFallback, Fuse, Strip).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace spense::tok {

// SentencePiece piece types, numbered as GGUF's tokenizer.ggml.token_type (and the .model proto).
enum class PieceKind : uint8_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

struct SpmVocab {
    std::vector<std::string> pieces;  // by id
    std::vector<float> scores;
    std::vector<PieceKind> kinds;
};

struct SpmOptions {
    std::string space = "\xE2\x96\x81";    // how pieces write ' ': "▁", or " " in llama2.c files
    bool add_dummy_prefix = true;          // a space before each run of text
    bool remove_extra_whitespaces = false;  // strip leading/trailing spaces and squeeze inner runs
    std::optional<int32_t> bos, eos;
    bool add_bos = true;
};

// `source` names the file in error messages.
std::unique_ptr<Tokenizer> make_spm_tokenizer(SpmVocab vocab, SpmOptions options, std::string source);

}  // namespace spense::tok
