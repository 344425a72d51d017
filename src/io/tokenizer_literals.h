// Tokens matched literally in text before anything else sees it: HF added tokens, GGUF control and
// user-defined tokens, SentencePiece control pieces ("<|im_start|>", "<s>").
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spense::tok {

struct LiteralToken {
    std::string content;
    int32_t id = 0;
    bool lstrip = false;       // the match takes in the whitespace before it
    bool rstrip = false;       // ... and the whitespace after it
    bool single_word = false;  // only matches with no word character right before or after it
};

// A byte range of the text: either plain text or one matched literal token.
struct Segment {
    size_t begin = 0, end = 0;
    std::optional<int32_t> id;
};

class LiteralMatcher {
public:
    LiteralMatcher() = default;
    explicit LiteralMatcher(std::vector<LiteralToken> tokens);
    bool empty() const { return tokens_.empty(); }

    // `text` (valid UTF-8) cut into plain runs and literal tokens, in order and covering it. Matches
    // are leftmost-longest and do not overlap, as in HF's added-vocabulary split; a single_word
    // match that fails its test is skipped (its bytes stay plain text).
    std::vector<Segment> split(std::string_view text) const;

private:
    std::vector<LiteralToken> tokens_;
    std::array<std::vector<uint32_t>, 256> by_first_byte_;  // indices into tokens_, longest first
};

}  // namespace spense::tok
