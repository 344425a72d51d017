// Text primitives the tokenizers share: UTF-8 repair, Unicode normalization (utf8proc), the GPT-2
// byte-level alphabet, SentencePiece byte-token names, and PCRE2 regexes.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace spense::tok {

// Token text -> id, looked up by std::string_view without building a std::string.
struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIds = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// `s` with each byte that does not start a well-formed UTF-8 sequence replaced by U+FFFD, one per
// byte (as SentencePiece and llama.cpp treat such input). Every tokenizer encodes this form.
std::string repair_utf8(std::string_view s);
// `s` with each maximal ill-formed subsequence replaced by one U+FFFD (Rust's from_utf8_lossy,
// which HF's byte-level decoder applies to the bytes it reassembles).
std::string lossy_utf8(std::string_view s);
bool is_valid_utf8(std::string_view s);
// Length of the character starting at s[i]; `s` must be valid UTF-8.
size_t char_len(std::string_view s, size_t i);
// The code point starting at s[i]; `s` must be valid UTF-8.
char32_t code_point(std::string_view s, size_t i);
std::string encode_utf8(char32_t cp);

enum class UnicodeForm { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view s, UnicodeForm form);

// Unicode general-category tests used by HF pre-tokenizers and added tokens.
bool is_numeric(char32_t cp);     // Rust char::is_numeric: Nd, Nl, No
bool is_whitespace(char32_t cp);  // the White_Space property
bool is_word_char(char32_t cp);   // regex \w: letters, marks, Nd, Pc

// GPT-2's byte-level alphabet: byte b <-> one printable code point, as UTF-8.
const std::array<std::string, 256>& byte_level_chars();
std::string to_byte_level(std::string_view bytes);
// The bytes a byte-level token stands for; nullopt if it has a character outside the alphabet.
std::optional<std::string> from_byte_level(std::string_view token);

// "<0xAB>" <-> byte 0xAB (SentencePiece byte-fallback pieces).
std::string byte_token(uint8_t b);
std::optional<uint8_t> parse_byte_token(std::string_view token);

// A compiled PCRE2 pattern in UTF + UCP mode (\p{L}, \s, \w and case folding are Unicode-aware),
// JIT-compiled where PCRE2 supports it. Shareable across threads.
class Regex {
public:
    // `where` names the file and field for the error a bad pattern raises.
    Regex(const std::string& pattern, std::string_view where);
    // Byte ranges of the successive non-overlapping matches in `s` (valid UTF-8), leftmost first;
    // after an empty match the search resumes one character further on.
    std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;

private:
    struct Compiled;
    std::shared_ptr<const Compiled> code_;
};

}  // namespace spense::tok
