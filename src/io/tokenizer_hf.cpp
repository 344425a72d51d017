#include "io/tokenizer_hf.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "io/tokenizer_bpe.h"
#include "io/tokenizer_literals.h"
#include "io/tokenizer_text.h"

namespace spense {

namespace tok {

namespace {

using nlohmann::json;
using Ranges = std::vector<std::pair<size_t, size_t>>;

// A run of text on its way through the pipeline. `at_start`: it begins where the input begins
// (Metaspace's prepend_scheme "first" looks at that).
struct Piece {
    std::string text;
    bool at_start;
};

using NormalizeFn = std::function<void(std::string&)>;
using PreTokenizeFn = std::function<void(std::vector<Piece>&)>;
using DecodeFn = std::function<void(std::vector<std::string>&)>;

// A Split/Replace pattern: {"String": literal} or {"Regex": pattern}.
class Pattern {
public:
    Pattern(const json& j, const std::string& where) {
        if (j.contains("Regex")) {
            regex_ = std::make_shared<Regex>(j.at("Regex").get<std::string>(), where);
        } else {
            literal_ = j.at("String").get<std::string>();
            if (literal_.empty()) fail(where, ": empty String pattern");
        }
    }
    Ranges find_all(std::string_view s) const {
        if (regex_) return regex_->find_all(s);
        Ranges out;
        for (size_t i = s.find(literal_); i != std::string_view::npos; i = s.find(literal_, i + literal_.size()))
            out.emplace_back(i, i + literal_.size());
        return out;
    }
    std::string replace(std::string_view s, std::string_view content) const {
        std::string out;
        size_t prev = 0;
        for (auto [b, e] : find_all(s)) {
            out.append(s.substr(prev, b - prev)).append(content);
            prev = e;
        }
        return out.append(s.substr(prev));
    }

private:
    std::shared_ptr<const Regex> regex_;
    std::string literal_;
};

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const std::string& s, const std::string& where) {
    if (s == "Removed") return Behavior::Removed;
    if (s == "Isolated") return Behavior::Isolated;
    if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
    if (s == "MergedWithNext") return Behavior::MergedWithNext;
    if (s == "Contiguous") return Behavior::Contiguous;
    fail(where, ": Split behavior '", s, "' is not supported");
}

// Appends the pieces of `p` cut at the delimiter ranges `matches`, as HF's NormalizedString::split.
void split_piece(const Piece& p, const Ranges& matches, Behavior behavior, bool invert, std::vector<Piece>& out) {
    struct Part {
        size_t b, e;
        bool flag;  // a delimiter; after the behavior fold: to be removed
    };
    std::vector<Part> parts;
    size_t prev = 0;
    for (auto [b, e] : matches) {
        if (prev != b) parts.push_back({prev, b, false});
        parts.push_back({b, e, true});
        prev = e;
    }
    if (prev != p.text.size() || parts.empty()) parts.push_back({prev, p.text.size(), false});
    if (invert)
        for (auto& x : parts) x.flag = !x.flag;

    std::vector<Part> folded;
    bool prev_match = false;
    switch (behavior) {
        case Behavior::Removed:
            folded = parts;
            break;
        case Behavior::Isolated:
            for (auto x : parts) folded.push_back({x.b, x.e, false});
            break;
        case Behavior::MergedWithPrevious:
            for (auto x : parts) {
                if (x.flag && !prev_match && !folded.empty())
                    folded.back().e = x.e;
                else
                    folded.push_back({x.b, x.e, false});
                prev_match = x.flag;
            }
            break;
        case Behavior::MergedWithNext:
            for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
                if (it->flag && !prev_match && !folded.empty())
                    folded.back().b = it->b;
                else
                    folded.push_back({it->b, it->e, false});
                prev_match = it->flag;
            }
            std::reverse(folded.begin(), folded.end());
            break;
        case Behavior::Contiguous:
            for (auto x : parts) {
                if (x.flag == prev_match && !folded.empty())
                    folded.back().e = x.e;
                else
                    folded.push_back({x.b, x.e, false});
                prev_match = x.flag;
            }
            break;
    }
    for (const Part& x : folded)
        if (!x.flag && x.b < x.e) out.push_back({p.text.substr(x.b, x.e - x.b), p.at_start && x.b == 0});
}

// Each character for which `pred` holds, as its own delimiter range.
template <typename Pred>
Ranges char_matches(std::string_view s, Pred pred) {
    Ranges out;
    for (size_t i = 0; i < s.size(); i += char_len(s, i))
        if (pred(code_point(s, i))) out.emplace_back(i, i + char_len(s, i));
    return out;
}

PreTokenizeFn for_each_piece(std::function<void(const Piece&, std::vector<Piece>&)> f) {
    return [f = std::move(f)](std::vector<Piece>& pieces) {
        std::vector<Piece> out;
        out.reserve(pieces.size());
        for (const Piece& p : pieces) f(p, out);
        pieces = std::move(out);
    };
}

// GPT-2's pre-tokenizer regex, which HF's ByteLevel applies when use_regex is set.
constexpr const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Prepend { Always, First, Never };

Prepend metaspace_scheme(const json& j, const std::string& where) {
    if (j.contains("prepend_scheme")) {
        std::string s = j.at("prepend_scheme").get<std::string>();
        if (s == "always") return Prepend::Always;
        if (s == "first") return Prepend::First;
        if (s == "never") return Prepend::Never;
        fail(where, ": Metaspace prepend_scheme '", s, "' is not supported");
    }
    return j.value("add_prefix_space", true) ? Prepend::Always : Prepend::Never;  // before tokenizers 0.14
}

std::string metaspace_replacement(const json& j) { return j.value("replacement", std::string("\xE2\x96\x81")); }

class Parser {
public:
    explicit Parser(std::string source) : source_(std::move(source)) {}

    NormalizeFn normalizer(const json& j) const {
        if (j.is_null()) return {};
        const std::string type = j.at("type").get<std::string>();
        const std::string where = cat(source_, ": normalizer ", type);
        if (type == "Sequence") {
            std::vector<NormalizeFn> fns;
            for (const json& n : j.at("normalizers"))
                if (auto f = normalizer(n)) fns.push_back(std::move(f));
            return [fns](std::string& s) {
                for (const auto& f : fns) f(s);
            };
        }
        for (auto [name, form] : {std::pair{"NFC", UnicodeForm::NFC}, std::pair{"NFD", UnicodeForm::NFD},
                                  std::pair{"NFKC", UnicodeForm::NFKC}, std::pair{"NFKD", UnicodeForm::NFKD}})
            if (type == name) return [form](std::string& s) { s = normalize(s, form); };
        if (type == "Prepend")
            return [p = j.at("prepend").get<std::string>()](std::string& s) {
                if (!s.empty()) s.insert(0, p);
            };
        if (type == "Replace")
            return [pat = Pattern(j.at("pattern"), where), content = j.at("content").get<std::string>()](std::string& s) {
                s = pat.replace(s, content);
            };
        fail(source_, ": normalizer type '", type, "' is not supported (spense reads NFC, NFD, NFKC, NFKD, Prepend, "
             "Replace and Sequence)");
    }

    PreTokenizeFn pre_tokenizer(const json& j) const {
        if (j.is_null()) return {};
        const std::string type = j.at("type").get<std::string>();
        const std::string where = cat(source_, ": pre_tokenizer ", type);
        if (type == "Sequence") {
            std::vector<PreTokenizeFn> fns;
            for (const json& p : j.at("pretokenizers"))
                if (auto f = pre_tokenizer(p)) fns.push_back(std::move(f));
            return [fns](std::vector<Piece>& pieces) {
                for (const auto& f : fns) f(pieces);
            };
        }
        if (type == "ByteLevel") {
            bool prefix = j.value("add_prefix_space", true);
            std::shared_ptr<const Regex> re;
            if (j.value("use_regex", true)) re = std::make_shared<Regex>(kGpt2Regex, where);
            return for_each_piece([prefix, re](const Piece& p, std::vector<Piece>& out) {
                Piece q = p;
                if (prefix && !q.text.empty() && q.text[0] != ' ') q.text = " " + q.text;
                size_t first = out.size();
                if (re)
                    split_piece(q, re->find_all(q.text), Behavior::Isolated, false, out);
                else if (!q.text.empty())
                    out.push_back(std::move(q));
                for (size_t i = first; i < out.size(); ++i) out[i].text = to_byte_level(out[i].text);
            });
        }
        if (type == "Split") {
            auto pat = std::make_shared<Pattern>(j.at("pattern"), where);
            Behavior b = parse_behavior(j.at("behavior").get<std::string>(), where);
            bool invert = j.value("invert", false);
            return for_each_piece([pat, b, invert](const Piece& p, std::vector<Piece>& out) {
                split_piece(p, pat->find_all(p.text), b, invert, out);
            });
        }
        if (type == "Digits") {
            Behavior b = j.value("individual_digits", false) ? Behavior::Isolated : Behavior::Contiguous;
            return for_each_piece([b](const Piece& p, std::vector<Piece>& out) {
                split_piece(p, char_matches(p.text, is_numeric), b, false, out);
            });
        }
        if (type == "Metaspace") {
            std::string rep = metaspace_replacement(j);
            if (rep.empty() || char_len(rep, 0) != rep.size()) fail(where, ": replacement must be one character");
            char32_t rep_cp = code_point(rep, 0);
            Prepend scheme = metaspace_scheme(j, where);
            bool split = j.value("split", true);
            return for_each_piece([rep, rep_cp, scheme, split](const Piece& p, std::vector<Piece>& out) {
                Piece q{std::string(), p.at_start};
                for (char c : p.text) {
                    if (c == ' ')
                        q.text += rep;
                    else
                        q.text += c;
                }
                bool prepend = scheme == Prepend::Always || (scheme == Prepend::First && q.at_start);
                if (prepend && !q.text.empty() && !q.text.starts_with(rep)) q.text.insert(0, rep);
                if (split)
                    split_piece(q, char_matches(q.text, [rep_cp](char32_t c) { return c == rep_cp; }),
                                Behavior::MergedWithNext, false, out);
                else if (!q.text.empty())
                    out.push_back(std::move(q));
            });
        }
        fail(source_, ": pre_tokenizer type '", type, "' is not supported (spense reads ByteLevel, Split, Digits, "
             "Metaspace and Sequence)");
    }

    DecodeFn decoder(const json& j) const {
        if (j.is_null()) return {};
        const std::string type = j.at("type").get<std::string>();
        const std::string where = cat(source_, ": decoder ", type);
        if (type == "Sequence") {
            std::vector<DecodeFn> fns;
            for (const json& d : j.at("decoders"))
                if (auto f = decoder(d)) fns.push_back(std::move(f));
            return [fns](std::vector<std::string>& t) {
                for (const auto& f : fns) f(t);
            };
        }
        if (type == "ByteLevel")
            return [](std::vector<std::string>& tokens) {
                std::string bytes;
                for (const auto& t : tokens) bytes += from_byte_level(t).value_or(t);
                tokens.assign(1, lossy_utf8(bytes));
            };
        if (type == "Replace")
            return [pat = Pattern(j.at("pattern"), where), content = j.at("content").get<std::string>()](
                       std::vector<std::string>& tokens) {
                for (auto& t : tokens) t = pat.replace(t, content);
            };
        if (type == "ByteFallback")
            return [](std::vector<std::string>& tokens) {
                std::vector<std::string> out;
                std::string bytes;
                size_t n_bytes = 0;
                auto flush = [&] {
                    if (n_bytes == 0) return;
                    if (is_valid_utf8(bytes))
                        out.push_back(bytes);
                    else
                        out.insert(out.end(), n_bytes, "\xEF\xBF\xBD");
                    bytes.clear();
                    n_bytes = 0;
                };
                for (auto& t : tokens) {
                    if (auto b = parse_byte_token(t)) {
                        bytes += char(*b);
                        ++n_bytes;
                        continue;
                    }
                    flush();
                    out.push_back(std::move(t));
                }
                flush();
                tokens = std::move(out);
            };
        if (type == "Fuse")
            return [](std::vector<std::string>& tokens) {
                std::string all;
                for (const auto& t : tokens) all += t;
                tokens.assign(1, all);
            };
        if (type == "Strip") {
            std::string content = j.at("content").get<std::string>();
            size_t start = j.at("start").get<size_t>(), stop = j.at("stop").get<size_t>();
            return [content, start, stop](std::vector<std::string>& tokens) {
                for (auto& t : tokens) {
                    for (size_t i = 0; i < start && t.starts_with(content); ++i) t.erase(0, content.size());
                    for (size_t i = 0; i < stop && t.ends_with(content); ++i) t.resize(t.size() - content.size());
                }
            };
        }
        if (type == "Metaspace") {
            std::string rep = metaspace_replacement(j);
            bool strip_first = metaspace_scheme(j, where) != Prepend::Never;
            return [rep, strip_first](std::vector<std::string>& tokens) {
                for (size_t i = 0; i < tokens.size(); ++i) {
                    std::string out;
                    for (size_t k = 0; k < tokens[i].size();) {
                        if (tokens[i].compare(k, rep.size(), rep) == 0) {
                            if (i != 0 || !strip_first) out += ' ';
                            k += rep.size();
                        } else {
                            out += tokens[i][k++];
                        }
                    }
                    tokens[i] = std::move(out);
                }
            };
        }
        fail(source_, ": decoder type '", type, "' is not supported (spense reads ByteLevel, Replace, ByteFallback, "
             "Fuse, Strip, Metaspace and Sequence)");
    }

    BpeModel model(const json& m) const {
        std::string type = m.value("type", m.contains("merges") ? "BPE" : "");
        if (type != "BPE")
            fail(source_, ": model type '", type, "' is not supported (spense reads BPE tokenizers)");
        for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
            if (m.contains(key) && !m.at(key).is_null() && !m.at(key).get<std::string>().empty())
                fail(source_, ": BPE ", key, " is not supported");
        if (m.contains("dropout") && !m.at("dropout").is_null() && m.at("dropout").get<double>() != 0.0)
            fail(source_, ": BPE dropout is not supported");

        TokenIds vocab;
        for (const auto& [text, id] : m.at("vocab").items()) vocab.emplace(text, id.get<int32_t>());
        std::vector<std::pair<std::string, std::string>> merges;
        for (const json& e : m.at("merges")) {
            if (e.is_array() && e.size() == 2) {
                merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
                continue;
            }
            // The older form "a b": exactly one space (tokens with spaces need the pair form).
            std::string s = e.get<std::string>();
            size_t sp = s.find(' ');
            if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                fail(source_, ": merge '", s, "' is not two tokens separated by one space");
            merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        }

        BpeModel::Options opt;
        if (m.contains("unk_token") && !m.at("unk_token").is_null()) {
            std::string unk = m.at("unk_token").get<std::string>();
            auto it = vocab.find(unk);
            if (it == vocab.end()) fail(source_, ": unk_token '", unk, "' is not in the vocab");
            opt.unk_id = it->second;
        }
        opt.fuse_unk = m.value("fuse_unk", false);
        opt.byte_fallback = m.value("byte_fallback", false);
        opt.ignore_merges = m.value("ignore_merges", false);
        return BpeModel(std::move(vocab), merges, opt, source_);
    }

    // BOS/EOS the post-processor adds: the special token before $A is BOS, one after it is EOS.
    struct Specials {
        std::optional<int32_t> bos, eos;
        bool add_bos = false;
    };
    Specials post_processor(const json& j) const {
        Specials s;
        if (j.is_null()) return s;
        const std::string type = j.at("type").get<std::string>();
        if (type == "Sequence") {
            for (const json& p : j.at("processors")) {
                Specials t = post_processor(p);
                if (t.bos) {
                    s.bos = t.bos;
                    s.add_bos = t.add_bos;
                }
                if (t.eos) s.eos = t.eos;
            }
            return s;
        }
        if (type == "ByteLevel") return s;
        if (type == "RobertaProcessing" || type == "BertProcessing") {
            s.bos = j.at("cls").at(1).get<int32_t>();
            s.eos = j.at("sep").at(1).get<int32_t>();
            s.add_bos = true;
            return s;
        }
        if (type == "TemplateProcessing") {
            std::vector<int32_t> before, after;
            bool seen_a = false;
            for (const json& item : j.at("single")) {
                if (item.contains("Sequence")) {
                    seen_a = true;
                    continue;
                }
                const std::string name = item.at("SpecialToken").at("id").get<std::string>();
                for (const json& id : j.at("special_tokens").at(name).at("ids"))
                    (seen_a ? after : before).push_back(id.get<int32_t>());
            }
            if (before.size() > 1 || after.size() > 1)
                fail(source_, ": post_processor template adds ", before.size(), " tokens before and ", after.size(),
                     " after the text; spense supports at most one (BOS) before and one (EOS) after");
            if (!before.empty()) {
                s.bos = before[0];
                s.add_bos = true;
            }
            if (!after.empty()) s.eos = after[0];
            return s;
        }
        fail(source_, ": post_processor type '", type, "' is not supported (spense reads TemplateProcessing, "
             "RobertaProcessing, BertProcessing, ByteLevel and Sequence)");
    }

private:
    std::string source_;
};

struct AddedToken {
    std::string content;
    bool special;
};

class HfTokenizer final : public Tokenizer {
public:
    HfTokenizer(json tokenizer_json, std::string source, const json& config)
        : source_(std::move(source)), json_(std::move(tokenizer_json)) {
        build(config);
    }

    std::vector<int32_t> encode(std::string_view raw) const override {
        const std::string text = repair_utf8(raw);
        std::vector<int32_t> out;
        std::vector<Piece> pieces;
        for (const Segment& seg : raw_added_.split(text)) {
            if (seg.id) {
                out.push_back(*seg.id);
                continue;
            }
            std::string s = text.substr(seg.begin, seg.end - seg.begin);
            if (normalizer_) normalizer_(s);
            for (const Segment& sub : normalized_added_.split(s)) {
                if (sub.id) {
                    out.push_back(*sub.id);
                    continue;
                }
                pieces.assign(1, Piece{s.substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0});
                if (pre_tokenizer_) pre_tokenizer_(pieces);
                for (const Piece& p : pieces) model_->tokenize(p.text, out);
            }
        }
        return out;
    }

    std::string decode(std::span<const int32_t> ids) const override {
        std::vector<std::string> tokens;
        tokens.reserve(ids.size());
        for (int32_t id : ids) {
            if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
                if (!it->second.special) tokens.push_back(it->second.content);
                continue;
            }
            const std::string* t = model_->token(id);
            if (!t) fail(source_, ": cannot decode token id ", id, " (vocabulary of ", vocab_size_, ")");
            tokens.push_back(*t);
        }
        if (decoder_) decoder_(tokens);
        std::string out;
        for (size_t i = 0; i < tokens.size(); ++i) {
            if (i > 0 && !decoder_) out += ' ';  // HF joins with spaces when there is no decoder
            out += tokens[i];
        }
        return out;
    }

    int32_t vocab_size() const override { return vocab_size_; }
    std::optional<int32_t> bos_id() const override { return bos_; }
    std::optional<int32_t> eos_id() const override { return eos_; }
    bool add_bos() const override { return add_bos_ && bos_.has_value(); }
    nlohmann::json to_hf_json() const override { return json_; }

private:
    void build(const json& config) {
        Parser parse(source_);
        model_ = std::make_unique<const BpeModel>(parse.model(json_.at("model")));
        normalizer_ = parse.normalizer(json_.value("normalizer", json()));
        pre_tokenizer_ = parse.pre_tokenizer(json_.value("pre_tokenizer", json()));
        decoder_ = parse.decoder(json_.value("decoder", json()));

        vocab_size_ = model_->id_bound();
        std::vector<LiteralToken> raw, normalized;
        for (const json& a : json_.value("added_tokens", json::array())) {
            LiteralToken t{a.at("content").get<std::string>(), a.at("id").get<int32_t>(), a.value("lstrip", false),
                           a.value("rstrip", false), a.value("single_word", false)};
            vocab_size_ = std::max(vocab_size_, t.id + 1);
            // A normalized token is matched, and (as HF 0.23 does) decoded, in its normalized form.
            const bool is_normalized = a.value("normalized", !a.value("special", false));
            if (is_normalized && normalizer_) normalizer_(t.content);
            added_by_id_[t.id] = {t.content, a.value("special", false)};
            (is_normalized ? normalized : raw).push_back(std::move(t));
        }
        raw_added_ = LiteralMatcher(std::move(raw));
        normalized_added_ = LiteralMatcher(std::move(normalized));

        Parser::Specials s = parse.post_processor(json_.value("post_processor", json()));
        bos_ = s.bos;
        eos_ = s.eos;
        add_bos_ = s.add_bos;
        auto token_id = [&](const json& v, const char* key) -> std::optional<int32_t> {
            if (v.is_null()) return std::nullopt;
            std::string text = v.is_object() ? v.at("content").get<std::string>() : v.get<std::string>();
            for (const auto& [id, a] : added_by_id_)
                if (a.content == text) return id;
            if (auto id = model_->find(text)) return id;
            fail(source_, ": ", key, " '", text, "' (from the tokenizer config) is not a token");
        };
        if (config.contains("bos_token")) bos_ = token_id(config.at("bos_token"), "bos_token");
        if (config.contains("eos_token")) eos_ = token_id(config.at("eos_token"), "eos_token");
        if (config.contains("add_bos_token") && config.at("add_bos_token").is_boolean())
            add_bos_ = config.at("add_bos_token").get<bool>();
    }

    std::string source_;
    json json_;
    NormalizeFn normalizer_;
    PreTokenizeFn pre_tokenizer_;
    DecodeFn decoder_;
    LiteralMatcher raw_added_, normalized_added_;
    std::unordered_map<int32_t, AddedToken> added_by_id_;
    int32_t vocab_size_ = 0;
    std::optional<int32_t> bos_, eos_;
    bool add_bos_ = false;
    std::unique_ptr<const BpeModel> model_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_hf_tokenizer(nlohmann::json tokenizer_json, std::string source, const nlohmann::json& config) {
    try {
        return std::make_unique<HfTokenizer>(std::move(tokenizer_json), source, config);
    } catch (const nlohmann::json::exception& e) {
        fail(source, ": malformed tokenizer (", e.what(), ")");
    }
}

}  // namespace tok

namespace {

nlohmann::json read_json(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path.string(), ": cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        return nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::parse_error& e) {
        fail(path.string(), ": not valid JSON (", e.what(), ")");
    }
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json) {
    nlohmann::json j = read_json(tokenizer_json);
    if (!j.is_object() || !j.contains("model"))
        fail(tokenizer_json.string(), ": not a HF tokenizer.json (no \"model\")");
    const auto config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
    nlohmann::json config = std::filesystem::exists(config_path) ? read_json(config_path) : nlohmann::json::object();
    if (!config.is_object()) fail(config_path.string(), ": not a JSON object");
    return tok::make_hf_tokenizer(std::move(j), tokenizer_json.string(), config);
}

}  // namespace spense
