// llama2.c tokenizer.bin (written by llama2.c's tokenizer.py export):
//   int32 max_token_length, then per token until the end of the file:
//   float32 score, int32 length, `length` bytes of UTF-8.
// The vocabulary size is not stored. Pieces write SentencePiece's "▁" as " "; ids 0, 1, 2 are
// <unk>, <s>, </s> (the last two stored as "\n<s>\n" and "\n</s>\n"); "<0xXX>" pieces (ids 3..258)
// are the byte fallback.
//
// Encoding follows SentencePiece (tokenizer_spm.h), which run.c approximates: run.c always adds the
// dummy-prefix space and never squeezes whitespace. The .bin does not record SentencePiece's
// normalizer settings, so when the .model it came from sits beside it (same stem, e.g. tok512.bin and
// tok512.model) its add_dummy_prefix and remove_extra_whitespaces flags are used, and encoding matches
// SentencePiece on that model (llama2.c's own train_vocab leaves remove_extra_whitespaces on; Llama 2's
// tokenizer.model has it off). Without the .model, run.c's behaviour. Other normalizer rules of a
// .model are not applied (run.c does not apply them either).
#include <cstring>
#include <filesystem>
#include <string_view>

#include "core/error.h"
#include "core/mapped_file.h"
#include "io/tokenizer.h"
#include "io/tokenizer_spm.h"
#include "io/tokenizer_text.h"

namespace spense {

namespace {

// Protobuf wire-format reader, just enough to walk a SentencePiece ModelProto.
class ProtoReader {
public:
    ProtoReader(std::string_view data, const std::string& where) : data_(data), where_(where) {}
    bool done() const { return pos_ >= data_.size(); }

    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (done()) fail(where_, ": truncated SentencePiece model (varint at offset ", pos_, ")");
            auto b = static_cast<unsigned char>(data_[pos_++]);
            v |= uint64_t(b & 0x7F) << shift;
            if (!(b & 0x80)) return v;
        }
        fail(where_, ": corrupt SentencePiece model (varint too long at offset ", pos_, ")");
    }
    // Reads a field key; returns the field number and sets `wire` to its wire type.
    uint64_t key(int& wire) {
        uint64_t k = varint();
        wire = int(k & 7);
        return k >> 3;
    }
    std::string_view bytes() {
        uint64_t n = varint();
        if (n > data_.size() - pos_) fail(where_, ": truncated SentencePiece model (field of ", n, " bytes at offset ", pos_, ")");
        std::string_view s = data_.substr(pos_, size_t(n));
        pos_ += size_t(n);
        return s;
    }
    void skip(int wire) {
        size_t n = 0;
        switch (wire) {
            case 0: varint(); return;
            case 2: bytes(); return;
            case 1: n = 8; break;
            case 5: n = 4; break;
            default: fail(where_, ": corrupt SentencePiece model (wire type ", wire, " at offset ", pos_, ")");
        }
        if (n > data_.size() - pos_) fail(where_, ": truncated SentencePiece model at offset ", pos_);
        pos_ += n;
    }

private:
    std::string_view data_;
    const std::string& where_;
    size_t pos_ = 0;
};

// ModelProto: pieces = 1 (repeated), normalizer_spec = 3. NormalizerSpec: add_dummy_prefix = 3,
// remove_extra_whitespaces = 4, both true when absent (proto2 defaults).
void read_normalizer_flags(const std::filesystem::path& model_path, size_t n_pieces, tok::SpmOptions& opt) {
    auto file = MappedFile::open(model_path);
    const std::string where = model_path.string();
    ProtoReader model({reinterpret_cast<const char*>(file->data()), file->size()}, where);
    size_t pieces = 0;
    opt.add_dummy_prefix = opt.remove_extra_whitespaces = true;
    while (!model.done()) {
        int wire = 0;
        uint64_t field = model.key(wire);
        if (field == 1 && wire == 2) {
            model.bytes();
            ++pieces;
        } else if (field == 3 && wire == 2) {
            ProtoReader spec(model.bytes(), where);
            while (!spec.done()) {
                uint64_t f = spec.key(wire);
                if ((f == 3 || f == 4) && wire == 0)
                    (f == 3 ? opt.add_dummy_prefix : opt.remove_extra_whitespaces) = spec.varint() != 0;
                else
                    spec.skip(wire);
            }
        } else {
            model.skip(wire);
        }
    }
    if (pieces != n_pieces)
        fail(where, ": has ", pieces, " pieces but the tokenizer.bin beside it has ", n_pieces,
             "; they are not the same vocabulary");
}

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path& tokenizer_bin) {
    const std::string where = tokenizer_bin.string();
    auto file = MappedFile::open(tokenizer_bin);
    const uint8_t* data = file->data();
    const size_t size = file->size();
    auto read_i32 = [&](size_t pos) {
        int32_t v;
        std::memcpy(&v, data + pos, 4);
        return v;
    };
    if (size < 4) fail(where, ": truncated llama2.c tokenizer (", size, " bytes, no header)");
    const int32_t max_len = read_i32(0);
    if (max_len <= 0) fail(where, ": not a llama2.c tokenizer (max_token_length = ", max_len, ")");

    tok::SpmVocab v;
    for (size_t pos = 4; pos < size;) {
        const size_t i = v.pieces.size();
        if (size - pos < 8)
            fail(where, ": truncated llama2.c tokenizer (token ", i, " at offset ", pos, " needs an 8-byte header, ",
                 size - pos, " bytes left)");
        float score;
        std::memcpy(&score, data + pos, 4);
        const int32_t len = read_i32(pos + 4);
        if (len < 0 || len > max_len)
            fail(where, ": corrupt llama2.c tokenizer (token ", i, " at offset ", pos, " has length ", len,
                 ", max_token_length is ", max_len, ")");
        pos += 8;
        if (size_t(len) > size - pos)
            fail(where, ": truncated llama2.c tokenizer (token ", i, " needs ", len, " bytes at offset ", pos, ", ",
                 size - pos, " left)");
        std::string piece(reinterpret_cast<const char*>(data + pos), size_t(len));
        pos += size_t(len);
        // llama2.c's exporter writes BOS and EOS as "\n<s>\n" and "\n</s>\n" so that run.c prints
        // them on lines of their own; the pieces themselves are "<s>" and "</s>".
        if (i == 1 || i == 2)
            while (!piece.empty() && (piece.front() == '\n' || piece.back() == '\n'))
                piece = piece.substr(piece.front() == '\n' ? 1 : 0, piece.size() - 1);
        tok::PieceKind kind = i == 0 ? tok::PieceKind::Unknown
                              : i <= 2 ? tok::PieceKind::Control
                              : tok::parse_byte_token(piece) ? tok::PieceKind::Byte
                                                             : tok::PieceKind::Normal;
        v.pieces.push_back(std::move(piece));
        v.scores.push_back(score);
        v.kinds.push_back(kind);
    }
    if (v.pieces.size() < 3)
        fail(where, ": llama2.c tokenizer has ", v.pieces.size(), " tokens; it needs at least <unk>, <s> and </s>");

    tok::SpmOptions opt;
    opt.space = " ";
    opt.remove_extra_whitespaces = false;
    opt.bos = 1;
    opt.eos = 2;
    opt.add_bos = true;
    auto model = tokenizer_bin.parent_path() / (tokenizer_bin.stem().string() + ".model");
    if (std::filesystem::exists(model)) read_normalizer_flags(model, v.pieces.size(), opt);
    return tok::make_spm_tokenizer(std::move(v), std::move(opt), where);
}

}  // namespace spense
