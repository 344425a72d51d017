#include "io/tokenizer_text.h"

#include <cstdlib>

#include <pcre2.h>
#include <utf8proc.h>

#include "core/error.h"

namespace spense::tok {

namespace {

// How a lead byte constrains a well-formed sequence (Unicode table 3-7): its length and the range
// allowed for the second byte (later bytes are always 80..BF).
struct Lead {
    size_t len;
    unsigned char lo, hi;
};

Lead lead_of(unsigned char b) {
    if (b < 0x80) return {1, 0, 0};
    if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
    if (b == 0xE0) return {3, 0xA0, 0xBF};
    if (b == 0xED) return {3, 0x80, 0x9F};
    if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
    if (b == 0xF0) return {4, 0x90, 0xBF};
    if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
    if (b == 0xF4) return {4, 0x80, 0x8F};
    return {0, 0, 0};
}

// The bytes at the start of `s` that belong to one sequence: its length when well formed
// (complete), otherwise the length of its longest well-formed prefix (at least 1).
struct Prefix {
    size_t len;
    bool complete;
};

Prefix utf8_prefix(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    Lead l = lead_of(p[0]);
    if (l.len == 0) return {1, false};
    for (size_t i = 1; i < l.len; ++i) {
        unsigned char lo = i == 1 ? l.lo : 0x80, hi = i == 1 ? l.hi : 0xBF;
        if (i >= s.size() || p[i] < lo || p[i] > hi) return {i, false};
    }
    return {l.len, true};
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

template <bool kPerByte>
std::string replace_ill_formed(std::string_view s) {
    if (is_valid_utf8(s)) return std::string(s);
    std::string out;
    out.reserve(s.size() + 16);
    for (size_t i = 0; i < s.size();) {
        Prefix p = utf8_prefix(s.substr(i));
        if (p.complete) {
            out.append(s.substr(i, p.len));
            i += p.len;
        } else {
            out.append(kReplacement);
            i += kPerByte ? 1 : p.len;
        }
    }
    return out;
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        Prefix p = utf8_prefix(s.substr(i));
        if (!p.complete) return false;
        i += p.len;
    }
    return true;
}

std::string repair_utf8(std::string_view s) { return replace_ill_formed<true>(s); }
std::string lossy_utf8(std::string_view s) { return replace_ill_formed<false>(s); }

size_t char_len(std::string_view s, size_t i) { return lead_of(static_cast<unsigned char>(s[i])).len; }

char32_t code_point(std::string_view s, size_t i) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data() + i);
    switch (lead_of(p[0]).len) {
        case 1: return p[0];
        case 2: return char32_t(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
        case 3: return char32_t(p[0] & 0x0F) << 12 | char32_t(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
        default: return char32_t(p[0] & 0x07) << 18 | char32_t(p[1] & 0x3F) << 12 | char32_t(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
    }
}

std::string encode_utf8(char32_t cp) {
    utf8proc_uint8_t buf[4];
    auto n = utf8proc_encode_char(utf8proc_int32_t(cp), buf);
    return std::string(reinterpret_cast<const char*>(buf), size_t(n));
}

std::string normalize(std::string_view s, UnicodeForm form) {
    if (s.empty()) return {};
    int options = UTF8PROC_STABLE;
    switch (form) {
        case UnicodeForm::NFC: options |= UTF8PROC_COMPOSE; break;
        case UnicodeForm::NFD: options |= UTF8PROC_DECOMPOSE; break;
        case UnicodeForm::NFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
        case UnicodeForm::NFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    utf8proc_uint8_t* out = nullptr;
    utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                                      &out, utf8proc_option_t(options));
    if (n < 0) fail("Unicode normalization failed: ", utf8proc_errmsg(n));
    std::string result(reinterpret_cast<const char*>(out), size_t(n));
    std::free(out);
    return result;
}

bool is_numeric(char32_t cp) {
    auto c = utf8proc_category(utf8proc_int32_t(cp));
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool is_whitespace(char32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

bool is_word_char(char32_t cp) {
    switch (utf8proc_category(utf8proc_int32_t(cp))) {
        case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
        case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
        case UTF8PROC_CATEGORY_PC:
            return true;
        default:
            return false;
    }
}

namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes take
// the code points from U+0100 up, in byte order.
struct ByteLevelTables {
    std::array<std::string, 256> chars;
    std::array<int16_t, 512> bytes;  // code point -> byte, -1 outside the alphabet
    ByteLevelTables() {
        bytes.fill(-1);
        char32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            char32_t cp = printable ? char32_t(b) : next++;
            chars[size_t(b)] = encode_utf8(cp);
            bytes[cp] = int16_t(b);
        }
    }
};

const ByteLevelTables& byte_level_tables() {
    static const ByteLevelTables t;
    return t;
}

}  // namespace

const std::array<std::string, 256>& byte_level_chars() { return byte_level_tables().chars; }

std::string to_byte_level(std::string_view bytes) {
    const auto& chars = byte_level_chars();
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char b : bytes) out += chars[b];
    return out;
}

std::optional<std::string> from_byte_level(std::string_view token) {
    if (!is_valid_utf8(token)) return std::nullopt;
    const auto& t = byte_level_tables();
    std::string out;
    for (size_t i = 0; i < token.size(); i += char_len(token, i)) {
        char32_t cp = code_point(token, i);
        if (cp >= t.bytes.size() || t.bytes[cp] < 0) return std::nullopt;
        out += char(t.bytes[cp]);
    }
    return out;
}

std::string byte_token(uint8_t b) {
    static const char* hex = "0123456789ABCDEF";
    return std::string{'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
}

std::optional<uint8_t> parse_byte_token(std::string_view token) {
    if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return std::nullopt;
    int v = 0;
    for (char c : token.substr(3, 2)) {
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return std::nullopt;
        v = v * 16 + d;
    }
    return uint8_t(v);
}

struct Regex::Compiled {
    pcre2_code* code = nullptr;
    std::string where;
    ~Compiled() { pcre2_code_free(code); }
};

namespace {

std::string pcre2_message(int code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(code, buf, sizeof(buf));
    return reinterpret_cast<const char*>(buf);
}

}  // namespace

Regex::Regex(const std::string& pattern, std::string_view where) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                     &err, &offset, nullptr);
    if (!code) fail(where, ": cannot compile regex '", pattern, "' (", pcre2_message(err), " at offset ", offset, ")");
    auto c = std::make_shared<Compiled>();
    c->code = code;
    c->where = std::string(where);
    // Without JIT support pcre2_match interprets the pattern: same matches, just slower.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    code_ = std::move(c);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view s) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_->code, nullptr), &pcre2_match_data_free);
    std::vector<std::pair<size_t, size_t>> out;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    for (size_t pos = 0; pos <= s.size();) {
        int rc = pcre2_match(code_->code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) fail(code_->where, ": regex match failed (", pcre2_message(rc), ")");
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        out.emplace_back(ov[0], ov[1]);
        if (ov[1] > ov[0]) {
            pos = ov[1];
        } else {
            if (ov[0] >= s.size()) break;
            pos = ov[0] + char_len(s, ov[0]);
        }
    }
    return out;
}

}  // namespace spense::tok
