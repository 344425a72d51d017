#include "io/checkpoint.h"

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "io/checkpoint_formats.h"

namespace spense {

int64_t TensorRef::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

const char* format_name(CheckpointFormat f) {
    switch (f) {
        case CheckpointFormat::HfSafetensors: return "safetensors";
        case CheckpointFormat::Llama2c: return "llama2.c";
        case CheckpointFormat::Gguf: return "gguf";
    }
    return "?";
}

const TensorRef& Checkpoint::tensor(const std::string& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail(path.string(), ": checkpoint has no tensor '", name, "'");
    return it->second;
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

// Interleaved RoPE rows (pair i of a head at rows 2i, 2i+1) to HF's half-split order (pair i at
// rows i and i + head_dim/2): the inverse of the permutation llama.cpp's converter applies.
void unpermute_rope_rows(std::vector<float>& w, int64_t rows, int64_t cols, int64_t heads) {
    int64_t hd = rows / heads;
    std::vector<float> out(w.size());
    for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < hd / 2; ++i)
            for (int64_t part = 0; part < 2; ++part)
                std::memcpy(&out[size_t((h * hd + part * hd / 2 + i) * cols)], &w[size_t((h * hd + 2 * i + part) * cols)],
                            size_t(cols) * sizeof(float));
    w.swap(out);
}

}  // namespace

const TensorRef& Checkpoint::tensor(const std::string& name, const std::vector<int64_t>& expected_shape) const {
    const TensorRef& t = tensor(name);
    if (t.shape != expected_shape)
        fail(t.file, ": tensor '", name, "' has shape ", shape_str(t.shape), " but the config implies ",
             shape_str(expected_shape));
    return t;
}

std::vector<float> Checkpoint::load_f32(const std::string& name, const std::vector<int64_t>& expected_shape) const {
    const TensorRef& t = tensor(name, expected_shape);
    std::vector<float> out(size_t(t.numel()));
    to_f32(t.dtype, t.data, t.numel(), out.data());
    for (const auto& f : files)
        if (t.data >= f->data() && t.data + t.nbytes <= f->data() + f->size()) f->release(t.data, t.nbytes);
    if (t.rope_heads > 0) unpermute_rope_rows(out, t.shape[0], t.numel() / t.shape[0], t.rope_heads);
    return out;
}

Checkpoint open_checkpoint(const std::filesystem::path& path, const std::filesystem::path& tokenizer_path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail(path.string(), ": no such file or directory");
    Checkpoint ckpt;
    if (std::filesystem::is_directory(path, ec)) {
        ckpt = detail::open_hf_directory(path);
    } else {
        char magic[4] = {};
        std::ifstream in(path, std::ios::binary);
        in.read(magic, 4);
        ckpt = std::memcmp(magic, "GGUF", 4) == 0 ? detail::open_gguf(path) : detail::open_llama2c(path);
    }
    if (!tokenizer_path.empty()) {
        ckpt.tokenizer = tokenizer_path.extension() == ".json" ? load_hf_tokenizer(tokenizer_path)
                                                               : load_llama2c_tokenizer(tokenizer_path);
    }
    return ckpt;
}

}  // namespace spense
