#include "io/text.h"

#include <charconv>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace spense {

TextRange TextRange::parse(std::string_view s) {
    auto colon = s.find(':');
    TextRange r;
    auto num = [&](std::string_view part, double* out) {
        auto res = std::from_chars(part.data(), part.data() + part.size(), *out);
        return res.ec == std::errc() && res.ptr == part.data() + part.size();
    };
    if (colon == std::string_view::npos || !num(s.substr(0, colon), &r.begin) || !num(s.substr(colon + 1), &r.end) ||
        !(r.begin >= 0 && r.begin < r.end && r.end <= 1))
        fail("range '", s, "' is not of the form a:b with 0 <= a < b <= 1 (for example 0.5:1.0)");
    return r;
}

std::string TextRange::str() const {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g:%g", begin, end);
    return buf;
}

std::string read_text_range(const std::filesystem::path& path, TextRange range) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path.string(), ": cannot open text file");
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string raw = ss.str(), text;
    text.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i)
        if (!(raw[i] == '\r' && i + 1 < raw.size() && raw[i + 1] == '\n')) text.push_back(raw[i]);
    if (text.empty()) fail(path.string(), ": text file is empty");

    auto line_start = [&](double frac) {
        size_t pos = size_t(frac * double(text.size()));
        if (pos == 0 || pos >= text.size()) return std::min(pos, text.size());
        if (text[pos - 1] == '\n') return pos;
        size_t nl = text.find('\n', pos);
        return nl == std::string::npos ? text.size() : nl + 1;
    };
    size_t b = line_start(range.begin), e = line_start(range.end);
    if (b >= e) fail(path.string(), ": range ", range.str(), " selects no complete line");
    return text.substr(b, e - b);
}

std::vector<int32_t> tokenize_text(const Tokenizer& tok, std::string_view text) { return tok.encode_for_model(text); }

}  // namespace spense
