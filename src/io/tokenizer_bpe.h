// Rank-ordered BPE: the model of HF tokenizers' "BPE" type, used for HF tokenizer.json files and
// GGUF "gpt2" vocabularies. A word starts as its characters; the adjacent pair with the lowest merge
// rank is merged (ties: leftmost) until no ranked pair is left. Linked symbols and a heap of
// candidate pairs make a word O(n log n).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/tokenizer_text.h"

namespace spense::tok {

class BpeModel {
public:
    struct Options {
        std::optional<int32_t> unk_id;  // stands for characters that are neither tokens nor byte tokens
        bool fuse_unk = false;          // consecutive unknown characters give one unk
        bool byte_fallback = false;     // an unknown character becomes its <0xXX> tokens when all exist
        bool ignore_merges = false;     // a word that is itself a token is that token
    };

    // `vocab` maps token text to id; `merges` are in rank order. A merge whose parts or result are
    // not tokens is an error naming `where`; a pair listed twice keeps its last rank (as HF does).
    BpeModel(TokenIds vocab, const std::vector<std::pair<std::string, std::string>>& merges, Options options,
             std::string_view where);
    // The id index points into the vocab map's nodes: moving keeps them valid, copying would not.
    BpeModel(const BpeModel&) = delete;
    BpeModel& operator=(const BpeModel&) = delete;
    BpeModel(BpeModel&&) = default;
    BpeModel& operator=(BpeModel&&) = default;

    // Appends the ids of `word` (one pre-token, already in the vocabulary's alphabet) to `out`.
    void tokenize(std::string_view word, std::vector<int32_t>& out) const;

    std::optional<int32_t> find(std::string_view token) const;
    // The token text of `id`, or nullptr if no token has it.
    const std::string* token(int32_t id) const;
    // One more than the largest id.
    int32_t id_bound() const { return int32_t(id_to_token_.size()); }

private:
    struct Merge {
        int32_t rank;
        int32_t new_id;
    };
    static uint64_t pair_key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }

    TokenIds vocab_;
    std::vector<const std::string*> id_to_token_;
    std::unordered_map<uint64_t, Merge> merges_;
    std::array<int32_t, 256> byte_ids_;  // id of <0xXX>, -1 if absent
    Options opt_;
};

}  // namespace spense::tok
