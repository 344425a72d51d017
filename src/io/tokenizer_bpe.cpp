#include "io/tokenizer_bpe.h"

#include <algorithm>

#include "core/error.h"
#include "io/tokenizer_text.h"

namespace spense::tok {

BpeModel::BpeModel(TokenIds vocab, const std::vector<std::pair<std::string, std::string>>& merges, Options options,
                   std::string_view where)
    : vocab_(std::move(vocab)), opt_(options) {
    int32_t bound = 0;
    for (const auto& [text, id] : vocab_) {
        if (id < 0) fail(where, ": token '", text, "' has negative id ", id);
        bound = std::max(bound, id + 1);
    }
    id_to_token_.assign(size_t(bound), nullptr);
    for (const auto& [text, id] : vocab_) id_to_token_[size_t(id)] = &text;

    byte_ids_.fill(-1);
    for (int b = 0; b < 256; ++b)
        if (auto id = find(byte_token(uint8_t(b)))) byte_ids_[size_t(b)] = *id;

    merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const auto& [a, b] = merges[rank];
        auto ia = find(a), ib = find(b), im = find(a + b);
        if (!ia || !ib) fail(where, ": merge '", a, " ", b, "' (rank ", rank, ") uses a token that is not in the vocab");
        if (!im) fail(where, ": merge '", a, " ", b, "' (rank ", rank, ") makes '", a + b, "', which is not in the vocab");
        merges_.insert_or_assign(pair_key(*ia, *ib), Merge{int32_t(rank), *im});
    }
}

std::optional<int32_t> BpeModel::find(std::string_view token) const {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
}

const std::string* BpeModel::token(int32_t id) const {
    return id >= 0 && id < id_bound() ? id_to_token_[size_t(id)] : nullptr;
}

namespace {

struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours in the word, -1 at the ends
    bool live;
};

struct Candidate {
    int32_t rank;
    int32_t pos;  // left symbol
    int32_t new_id;
    // std heaps put the largest first: the lowest rank, then the leftmost position.
    bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (opt_.ignore_merges)
        if (auto id = find(word)) {
            out.push_back(*id);
            return;
        }

    // Reused per thread: words are short and many, allocation would dominate.
    thread_local std::vector<Symbol> symbols;
    thread_local std::vector<Candidate> heap;
    symbols.clear();
    heap.clear();
    auto add = [&](int32_t id) {
        int32_t n = int32_t(symbols.size());
        if (n > 0) symbols.back().next = n;
        symbols.push_back({id, n - 1, -1, true});
    };

    bool pending_unk = false;
    auto flush_unk = [&] {
        if (pending_unk) add(*opt_.unk_id);
        pending_unk = false;
    };
    for (size_t i = 0; i < word.size();) {
        size_t n = std::min(char_len(word, i), word.size() - i);
        std::string_view ch = word.substr(i, n);
        i += n;
        if (auto id = find(ch)) {
            flush_unk();
            add(*id);
            continue;
        }
        if (opt_.byte_fallback &&
            std::all_of(ch.begin(), ch.end(), [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; })) {
            flush_unk();
            for (char c : ch) add(byte_ids_[static_cast<unsigned char>(c)]);
            continue;
        }
        if (!opt_.unk_id) continue;  // HF drops the character when there is no unk token
        if (!opt_.fuse_unk) flush_unk();
        pending_unk = true;
    }
    flush_unk();

    auto push_pair = [&](int32_t left) {
        int32_t right = symbols[size_t(left)].next;
        if (right < 0) return;
        auto it = merges_.find(pair_key(symbols[size_t(left)].id, symbols[size_t(right)].id));
        if (it == merges_.end()) return;
        heap.push_back({it->second.rank, left, it->second.new_id});
        std::push_heap(heap.begin(), heap.end());
    };
    for (int32_t i = 0; i + 1 < int32_t(symbols.size()); ++i) push_pair(i);

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        Candidate c = heap.back();
        heap.pop_back();
        Symbol& left = symbols[size_t(c.pos)];
        if (!left.live || left.next < 0) continue;
        // A candidate is stale when either side has merged since it was queued.
        auto it = merges_.find(pair_key(left.id, symbols[size_t(left.next)].id));
        if (it == merges_.end() || it->second.new_id != c.new_id) continue;
        Symbol& right = symbols[size_t(left.next)];
        left.id = c.new_id;
        right.live = false;
        left.next = right.next;
        if (right.next >= 0) symbols[size_t(right.next)].prev = c.pos;
        if (left.prev >= 0) push_pair(left.prev);
        push_pair(c.pos);
    }
    for (const Symbol& s : symbols)
        if (s.live) out.push_back(s.id);
}

}  // namespace spense::tok
