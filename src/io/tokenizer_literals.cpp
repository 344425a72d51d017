#include "io/tokenizer_literals.h"

#include <algorithm>

#include "io/tokenizer_text.h"

namespace spense::tok {

namespace {

size_t prev_char_start(std::string_view s, size_t i) {
    do --i;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80);
    return i;
}

}  // namespace

LiteralMatcher::LiteralMatcher(std::vector<LiteralToken> tokens) {
    for (auto& t : tokens)
        if (!t.content.empty()) tokens_.push_back(std::move(t));
    for (uint32_t i = 0; i < tokens_.size(); ++i)
        by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
    for (auto& v : by_first_byte_)
        std::stable_sort(v.begin(), v.end(),
                         [&](uint32_t a, uint32_t b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
}

std::vector<Segment> LiteralMatcher::split(std::string_view text) const {
    std::vector<Segment> out;
    size_t plain_from = 0;  // end of the last accepted match
    for (size_t pos = 0; pos < text.size();) {
        const LiteralToken* hit = nullptr;
        for (uint32_t i : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
            if (text.substr(pos).starts_with(tokens_[i].content)) {
                hit = &tokens_[i];
                break;
            }
        }
        if (!hit) {
            ++pos;
            continue;
        }
        size_t begin = pos, end = pos + hit->content.size();
        pos = end;
        if (hit->single_word) {
            bool word_before = begin > 0 && is_word_char(code_point(text, prev_char_start(text, begin)));
            bool word_after = end < text.size() && is_word_char(code_point(text, end));
            if (word_before || word_after) continue;
        }
        if (hit->lstrip)
            while (begin > plain_from) {
                size_t p = prev_char_start(text, begin);
                if (!is_whitespace(code_point(text, p))) break;
                begin = p;
            }
        if (hit->rstrip)
            while (end < text.size() && is_whitespace(code_point(text, end))) end += char_len(text, end);
        if (plain_from < begin) out.push_back({plain_from, begin, std::nullopt});
        out.push_back({begin, end, hit->id});
        plain_from = pos = end;
    }
    if (plain_from < text.size() || out.empty()) out.push_back({plain_from, text.size(), std::nullopt});
    return out;
}

}  // namespace spense::tok
