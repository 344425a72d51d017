// Evaluation and calibration text: a byte range of a text file, tokenized for a model as one
// stream (BOS once at its start when the tokenizer adds BOS; line breaks are tokens like any
// other text).
//
// Line ends are normalised to "\n" (WikiText ships CRLF). A range a:b selects the bytes from
// fraction a to fraction b of the file, each end moved forward to the start of a line, so
// that disjoint ranges (0:0.5 and 0.5:1) never share a line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer.h"

namespace spense {

struct TextRange {
    double begin = 0.0, end = 1.0;
    // "a:b" with 0 <= a < b <= 1; an error says what is wrong otherwise.
    static TextRange parse(std::string_view s);
    std::string str() const;
};

std::string read_text_range(const std::filesystem::path& path, TextRange range);

// The token stream of a text range.
std::vector<int32_t> tokenize_text(const Tokenizer& tok, std::string_view text);

}  // namespace spense
