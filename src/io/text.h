// Evaluation and calibration text: a byte range of a text file, split into documents and
// tokenized for a model.
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

// How the text is cut into documents before tokenizing.
enum class DocSplit {
    Whole,       // the range is one document: BOS once at its start (if the tokenizer adds BOS)
    Paragraphs,  // documents separated by blank lines (TinyStories): BOS before each one, or EOS
                 // between them for tokenizers that add no BOS
};
DocSplit parse_doc_split(std::string_view s);  // "whole" | "paragraphs"
const char* doc_split_name(DocSplit d);

std::string read_text_range(const std::filesystem::path& path, TextRange range);

// The token stream of `text` under `split`.
std::vector<int32_t> tokenize_text(const Tokenizer& tok, std::string_view text, DocSplit split);

}  // namespace spense
