#include "io/tokenizer_spm.h"

#include <algorithm>
#include <array>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer_literals.h"
#include "io/tokenizer_text.h"

namespace spense::tok {

namespace {

constexpr std::string_view kMetaSpace = "\xE2\x96\x81";  // ▁

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0;;) {
        size_t j = s.find(from, i);
        out.append(s.substr(i, j - i));
        if (j == std::string_view::npos) return out;
        out.append(to);
        i = j + from.size();
    }
}

class SpmTokenizer final : public Tokenizer {
public:
    SpmTokenizer(SpmVocab vocab, SpmOptions options, std::string source);

    std::vector<int32_t> encode(std::string_view text) const override;
    std::string decode(std::span<const int32_t> ids) const override;
    int32_t vocab_size() const override { return int32_t(vocab_.pieces.size()); }
    std::optional<int32_t> bos_id() const override { return opt_.bos; }
    std::optional<int32_t> eos_id() const override { return opt_.eos; }
    bool add_bos() const override { return opt_.add_bos && opt_.bos.has_value(); }
    nlohmann::json to_hf_json() const override;

private:
    std::string normalize(std::string_view text) const;
    void encode_run(std::string_view normalized, std::vector<int32_t>& out) const;
    // A piece as HF's tokenizer.json writes it (spaces as ▁).
    std::string hf_piece(int32_t id) const;

    SpmVocab vocab_;
    SpmOptions opt_;
    std::string source_;
    TokenIds mergeable_;  // normal and user-defined pieces (the first id of a repeated piece)
    std::array<int32_t, 256> byte_ids_;
    std::optional<int32_t> unk_;
    LiteralMatcher literals_;
};

SpmTokenizer::SpmTokenizer(SpmVocab vocab, SpmOptions options, std::string source)
    : vocab_(std::move(vocab)), opt_(std::move(options)), source_(std::move(source)) {
    const size_t n = vocab_.pieces.size();
    if (n == 0) fail(source_, ": the vocabulary is empty");
    if (vocab_.scores.size() != n || vocab_.kinds.size() != n)
        fail(source_, ": the vocabulary has ", n, " pieces but ", vocab_.scores.size(), " scores and ",
             vocab_.kinds.size(), " piece types");
    for (auto id : {opt_.bos, opt_.eos})
        if (id && (*id < 0 || size_t(*id) >= n)) fail(source_, ": special token id ", *id, " is outside the vocabulary of ", n);

    byte_ids_.fill(-1);
    std::vector<LiteralToken> literals;
    for (size_t i = 0; i < n; ++i) {
        const std::string& p = vocab_.pieces[i];
        switch (vocab_.kinds[i]) {
            case PieceKind::Normal:
            case PieceKind::UserDefined:
                mergeable_.try_emplace(p, int32_t(i));
                break;
            case PieceKind::Byte:
                if (auto b = parse_byte_token(p); b && byte_ids_[*b] < 0) byte_ids_[*b] = int32_t(i);
                break;
            case PieceKind::Unknown:
                if (!unk_) unk_ = int32_t(i);
                break;
            default:
                break;
        }
        if (vocab_.kinds[i] == PieceKind::Control || vocab_.kinds[i] == PieceKind::Unknown ||
            vocab_.kinds[i] == PieceKind::UserDefined)
            literals.push_back({p, int32_t(i)});
    }
    literals_ = LiteralMatcher(std::move(literals));
}

std::string SpmTokenizer::normalize(std::string_view text) const {
    std::string t;
    if (opt_.remove_extra_whitespaces) {
        size_t b = text.find_first_not_of(' '), e = text.find_last_not_of(' ');
        if (b == std::string_view::npos) return {};
        for (size_t i = b; i <= e; ++i)
            if (text[i] != ' ' || text[i - 1] != ' ') t += text[i];
    } else {
        t = text;
    }
    if (t.empty()) return {};
    if (opt_.add_dummy_prefix) t.insert(0, " ");
    return opt_.space == " " ? t : replace_all(t, " ", opt_.space);
}

namespace {

struct Symbol {
    uint32_t start, len;  // bytes of the normalized text; len 0 once merged into its left neighbour
    int32_t prev, next;
};

struct Candidate {
    float score;
    int32_t left;
    uint32_t len;  // of the merged piece: a candidate is stale once its left symbol's span changed
    // std heaps put the largest first: the highest score, then the leftmost pair.
    bool operator<(const Candidate& o) const { return score != o.score ? score < o.score : left > o.left; }
};

}  // namespace

void SpmTokenizer::encode_run(std::string_view text, std::vector<int32_t>& out) const {
    thread_local std::vector<Symbol> symbols;
    thread_local std::vector<Candidate> heap;
    symbols.clear();
    heap.clear();
    for (size_t i = 0; i < text.size();) {
        uint32_t n = uint32_t(std::min(char_len(text, i), text.size() - i));
        int32_t k = int32_t(symbols.size());
        symbols.push_back({uint32_t(i), n, k - 1, i + n < text.size() ? k + 1 : -1});
        i += n;
    }

    auto push_pair = [&](int32_t left) {
        if (left < 0) return;
        const Symbol& l = symbols[size_t(left)];
        if (l.next < 0) return;
        uint32_t len = l.len + symbols[size_t(l.next)].len;
        auto it = mergeable_.find(text.substr(l.start, len));
        if (it == mergeable_.end()) return;
        heap.push_back({vocab_.scores[size_t(it->second)], left, len});
        std::push_heap(heap.begin(), heap.end());
    };
    for (int32_t i = 0; i + 1 < int32_t(symbols.size()); ++i) push_pair(i);

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        Candidate c = heap.back();
        heap.pop_back();
        Symbol& l = symbols[size_t(c.left)];
        if (l.len == 0 || l.next < 0 || l.len + symbols[size_t(l.next)].len != c.len) continue;
        Symbol& r = symbols[size_t(l.next)];
        l.len = c.len;
        r.len = 0;
        l.next = r.next;
        if (r.next >= 0) symbols[size_t(r.next)].prev = c.left;
        push_pair(l.prev);
        push_pair(c.left);
    }

    bool pending_unk = false;
    for (const Symbol& s : symbols) {
        if (s.len == 0) continue;
        std::string_view piece = text.substr(s.start, s.len);
        auto it = mergeable_.find(piece);
        bool bytes = it == mergeable_.end() &&
                     std::all_of(piece.begin(), piece.end(), [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; });
        if (it == mergeable_.end() && !bytes) {
            pending_unk = unk_.has_value();  // consecutive unknown characters give one unk
            continue;
        }
        if (pending_unk) out.push_back(*unk_);
        pending_unk = false;
        if (bytes)
            for (char c : piece) out.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        else
            out.push_back(it->second);
    }
    if (pending_unk) out.push_back(*unk_);
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view raw) const {
    const std::string text = repair_utf8(raw);
    std::vector<int32_t> out;
    for (const Segment& seg : literals_.split(text)) {
        if (seg.id) {
            out.push_back(*seg.id);
            continue;
        }
        std::string norm = normalize(std::string_view(text).substr(seg.begin, seg.end - seg.begin));
        encode_run(norm, out);
    }
    return out;
}

std::string SpmTokenizer::decode(std::span<const int32_t> ids) const {
    std::string out, bytes;
    auto flush_bytes = [&] {
        if (is_valid_utf8(bytes))
            out += bytes;
        else
            for (size_t i = 0; i < bytes.size(); ++i) out += "\xEF\xBF\xBD";
        bytes.clear();
    };
    for (int32_t id : ids) {
        if (id < 0 || id >= vocab_size()) fail(source_, ": cannot decode token id ", id, " (vocabulary of ", vocab_size(), ")");
        const std::string& piece = vocab_.pieces[size_t(id)];
        switch (vocab_.kinds[size_t(id)]) {
            case PieceKind::Control:
            case PieceKind::Unknown:
                continue;
            case PieceKind::Byte:
                if (auto b = parse_byte_token(piece)) {
                    bytes += char(*b);
                    continue;
                }
                break;
            default:
                break;
        }
        flush_bytes();
        out += opt_.space == " " ? piece : replace_all(piece, opt_.space, " ");
    }
    flush_bytes();
    if (opt_.add_dummy_prefix && out.starts_with(' ')) out.erase(0, 1);
    return out;
}

std::string SpmTokenizer::hf_piece(int32_t id) const {
    const std::string& p = vocab_.pieces[size_t(id)];
    return opt_.space == kMetaSpace ? p : replace_all(p, opt_.space, kMetaSpace);
}

// The Llama-2 layout of transformers' LlamaConverter. The BPE merges come from the scores as its
// SentencePieceExtractor derives them: every split of a normal piece into two pieces, ordered by the
// piece's score (highest first), then piece id, then the ids of the two halves. Whitespace squeezing
// becomes two regex Replace normalizers.
nlohmann::json SpmTokenizer::to_hf_json() const {
    using nlohmann::json;
    const int32_t n = vocab_size();
    json vocab = json::object();
    std::vector<std::string> hf(static_cast<size_t>(n));
    TokenIds index;
    for (int32_t i = 0; i < n; ++i) {
        hf[size_t(i)] = hf_piece(i);
        if (index.try_emplace(hf[size_t(i)], i).second) vocab[hf[size_t(i)]] = i;
    }

    struct Merge {
        float score;
        int32_t left, right;
    };
    std::vector<Merge> merges;
    for (int32_t i = 0; i < n; ++i) {
        if (vocab_.kinds[size_t(i)] != PieceKind::Normal || index.at(hf[size_t(i)]) != i) continue;
        std::string_view p = hf[size_t(i)];
        std::vector<Merge> local;
        for (size_t k = char_len(p, 0); k < p.size(); k += char_len(p, k)) {
            auto l = index.find(p.substr(0, k)), r = index.find(p.substr(k));
            if (l != index.end() && r != index.end()) local.push_back({vocab_.scores[size_t(i)], l->second, r->second});
        }
        std::sort(local.begin(), local.end(),
                  [](const Merge& a, const Merge& b) { return std::pair(a.left, a.right) < std::pair(b.left, b.right); });
        merges.insert(merges.end(), local.begin(), local.end());
    }
    std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });
    json merge_list = json::array();
    for (const Merge& m : merges) merge_list.push_back({hf[size_t(m.left)], hf[size_t(m.right)]});

    json added = json::array();
    for (int32_t i = 0; i < n; ++i) {
        PieceKind k = vocab_.kinds[size_t(i)];
        if (k != PieceKind::Control && k != PieceKind::Unknown && k != PieceKind::UserDefined) continue;
        added.push_back({{"id", i}, {"content", hf[size_t(i)]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", false}, {"special", k != PieceKind::UserDefined}});
    }

    json normalizers = json::array();
    if (opt_.remove_extra_whitespaces) {
        normalizers.push_back({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}});
        normalizers.push_back({{"type", "Replace"}, {"pattern", {{"Regex", "\\A | \\z"}}}, {"content", ""}});
    }
    if (opt_.add_dummy_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kMetaSpace}});
    normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMetaSpace}});

    json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", kMetaSpace}}}, {"content", " "}},
                                 {{"type", "ByteFallback"}},
                                 {{"type", "Fuse"}}});
    if (opt_.add_dummy_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});

    json single = json::array(), pair = json::array(), specials = json::object();
    auto seq = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
    if (add_bos()) {
        const std::string& b = hf[size_t(*opt_.bos)];
        json tok = {{"SpecialToken", {{"id", b}, {"type_id", 0}}}};
        single.push_back(tok);
        pair.push_back(tok);
        specials[b] = {{"id", b}, {"ids", {*opt_.bos}}, {"tokens", {b}}};
    }
    single.push_back(seq("A", 0));
    pair.push_back(seq("A", 0));
    pair.push_back(seq("B", 1));

    return {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", added},
            {"normalizer", {{"type", "Sequence"}, {"normalizers", normalizers}}},
            {"pre_tokenizer", nullptr},
            {"post_processor", {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}}},
            {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", unk_ ? json(hf[size_t(*unk_)]) : json(nullptr)},
              {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr},
              {"fuse_unk", true},
              {"byte_fallback", true},
              {"ignore_merges", false},
              {"vocab", vocab},
              {"merges", merge_list}}}};
}

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(SpmVocab vocab, SpmOptions options, std::string source) {
    return std::make_unique<SpmTokenizer>(std::move(vocab), std::move(options), std::move(source));
}

}  // namespace spense::tok
