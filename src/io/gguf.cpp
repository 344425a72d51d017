#include "io/gguf.h"

#include <cstring>
#include <limits>

#include "core/error.h"

namespace spense {

namespace {

// ggml type ids (ggml.h) of the formats spense can decode.
bool ggml_type_to_dtype(uint32_t id, DType* out) {
    switch (id) {
        case 0: *out = DType::F32; return true;
        case 1: *out = DType::F16; return true;
        case 2: *out = DType::Q4_0; return true;
        case 3: *out = DType::Q4_1; return true;
        case 6: *out = DType::Q5_0; return true;
        case 7: *out = DType::Q5_1; return true;
        case 8: *out = DType::Q8_0; return true;
        case 12: *out = DType::Q4_K; return true;
        case 13: *out = DType::Q5_K; return true;
        case 14: *out = DType::Q6_K; return true;
        case 30: *out = DType::BF16; return true;
        default: return false;
    }
}

const char* ggml_type_name(uint32_t id) {
    static const char* names[] = {"F32",  "F16",  "Q4_0", "Q4_1", "Q4_2", "Q4_3",  "Q5_0",    "Q5_1",
                                  "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",  "Q6_K",    "Q8_K",
                                  "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
                                  "I8",   "I16",  "I32",  "I64",  "F64",  "IQ1_M", "BF16"};
    return id < sizeof(names) / sizeof(names[0]) ? names[id] : "unknown";
}

// Bounds-checked cursor over the mapped bytes.
class Reader {
public:
    Reader(const MappedFile& f) : f_(f) {}
    size_t pos() const { return pos_; }

    const uint8_t* take(size_t n, const char* what) {
        if (n > f_.size() - pos_)
            fail(f_.path(), ": truncated GGUF (", what, " needs ", n, " bytes at offset ", pos_, ", file has ",
                 f_.size(), ")");
        const uint8_t* p = f_.data() + pos_;
        pos_ += n;
        return p;
    }
    template <typename T>
    T scalar(const char* what) {
        T v;
        std::memcpy(&v, take(sizeof(T), what), sizeof(T));
        return v;
    }
    std::string string(const char* what) {
        uint64_t n = scalar<uint64_t>(what);
        const uint8_t* p = take(n, what);
        return std::string(reinterpret_cast<const char*>(p), size_t(n));
    }
    // An element count that cannot exceed the bytes left (each element takes >= 1 byte).
    uint64_t count(const char* what) {
        uint64_t n = scalar<uint64_t>(what);
        if (n > f_.size() - pos_)
            fail(f_.path(), ": corrupt GGUF (", what, " = ", n, " exceeds the ", f_.size() - pos_,
                 " bytes left at offset ", pos_, ")");
        return n;
    }

private:
    const MappedFile& f_;
    size_t pos_ = 0;
};

nlohmann::json read_value(Reader& r, uint32_t type, const std::string& key, const std::string& path) {
    switch (type) {
        case 0: return r.scalar<uint8_t>(key.c_str());
        case 1: return r.scalar<int8_t>(key.c_str());
        case 2: return r.scalar<uint16_t>(key.c_str());
        case 3: return r.scalar<int16_t>(key.c_str());
        case 4: return r.scalar<uint32_t>(key.c_str());
        case 5: return r.scalar<int32_t>(key.c_str());
        case 6: return r.scalar<float>(key.c_str());
        case 7: return r.scalar<uint8_t>(key.c_str()) != 0;
        case 8: return r.string(key.c_str());
        case 10: return r.scalar<uint64_t>(key.c_str());
        case 11: return r.scalar<int64_t>(key.c_str());
        case 12: return r.scalar<double>(key.c_str());
        case 9: {
            uint32_t elem = r.scalar<uint32_t>(key.c_str());
            if (elem == 9) fail(path, ": GGUF key '", key, "' is a nested array, which spense does not read");
            uint64_t n = r.count(key.c_str());
            nlohmann::json arr = nlohmann::json::array();
            arr.get_ref<nlohmann::json::array_t&>().reserve(size_t(n));
            for (uint64_t i = 0; i < n; ++i) arr.push_back(read_value(r, elem, key, path));
            return arr;
        }
        default:
            fail(path, ": corrupt GGUF (key '", key, "' has unknown value type ", type, ")");
    }
}

}  // namespace

GgufFile GgufFile::open(const std::filesystem::path& path) {
    GgufFile g;
    g.file_ = MappedFile::open(path);
    const MappedFile& f = *g.file_;
    Reader r(f);
    const uint8_t* magic = r.take(4, "magic");
    if (std::memcmp(magic, "GGUF", 4) != 0) fail(f.path(), ": not a GGUF file (bad magic)");
    g.version_ = r.scalar<uint32_t>("version");
    if (g.version_ < 2 || g.version_ > 3)
        fail(f.path(), ": GGUF version ", g.version_, " is not supported (versions 2 and 3 are)");
    uint64_t n_tensors = r.count("tensor count");
    uint64_t n_kv = r.count("metadata count");

    g.metadata_ = nlohmann::json::object();
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = r.string("metadata key");
        uint32_t type = r.scalar<uint32_t>("metadata type");
        g.metadata_[key] = read_value(r, type, key, f.path());
    }

    struct Info {
        std::string name;
        std::vector<int64_t> dims;
        uint32_t type;
        uint64_t offset;
    };
    std::vector<Info> infos(static_cast<size_t>(n_tensors));
    for (auto& t : infos) {
        t.name = r.string("tensor name");
        uint32_t n_dims = r.scalar<uint32_t>("tensor rank");
        if (n_dims == 0 || n_dims > 4) fail(f.path(), ": corrupt GGUF (tensor '", t.name, "' has rank ", n_dims, ")");
        for (uint32_t d = 0; d < n_dims; ++d) {
            uint64_t v = r.scalar<uint64_t>("tensor dims");
            if (v == 0 || v > (uint64_t(1) << 40))
                fail(f.path(), ": corrupt GGUF (tensor '", t.name, "' has dimension ", v, ")");
            t.dims.push_back(int64_t(v));
        }
        t.type = r.scalar<uint32_t>("tensor type");
        t.offset = r.scalar<uint64_t>("tensor offset");
    }

    uint64_t alignment = 32;
    if (g.has("general.alignment")) {
        alignment = uint64_t(g.get_int("general.alignment"));
        if (alignment == 0 || (alignment & (alignment - 1)) != 0)
            fail(f.path(), ": corrupt GGUF (general.alignment = ", alignment, " is not a power of two)");
    }
    uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;

    for (const auto& t : infos) {
        DType dt;
        if (!ggml_type_to_dtype(t.type, &dt))
            fail(f.path(), ": tensor '", t.name, "' uses GGML type ", ggml_type_name(t.type), " (id ", t.type,
                 "), which spense cannot dequantize; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, "
                 "Q5_K, Q6_K");
        int64_t n = 1;
        for (int64_t d : t.dims) {
            if (n > std::numeric_limits<int64_t>::max() / d) fail(f.path(), ": corrupt GGUF (tensor '", t.name, "' is too large)");
            n *= d;
        }
        if (t.dims[0] % dtype_info(dt).block_elems != 0)
            fail(f.path(), ": corrupt GGUF (tensor '", t.name, "' row of ", t.dims[0], " is not a whole number of ",
                 dtype_name(dt), " blocks)");
        size_t nbytes = dtype_bytes(dt, n);
        if (t.offset % alignment != 0 || data_start + t.offset > f.size() || nbytes > f.size() - data_start - t.offset)
            fail(f.path(), ": truncated or corrupt GGUF (tensor '", t.name, "' needs bytes [", data_start + t.offset, ", ",
                 data_start + t.offset + nbytes, ") but the file has ", f.size(), ")");
        g.tensors_.push_back({t.name, dt, t.dims, f.data() + data_start + t.offset, nbytes});
    }
    return g;
}

const nlohmann::json& GgufFile::get(const std::string& key) const {
    auto it = metadata_.find(key);
    if (it == metadata_.end()) fail(path(), ": GGUF metadata has no key '", key, "'");
    return *it;
}

std::string GgufFile::get_string(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_string()) fail(path(), ": GGUF key '", key, "' is not a string");
    return v.get<std::string>();
}

int64_t GgufFile::get_int(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_number_integer()) fail(path(), ": GGUF key '", key, "' is not an integer");
    return v.get<int64_t>();
}

double GgufFile::get_float(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_number()) fail(path(), ": GGUF key '", key, "' is not a number");
    return v.get<double>();
}

const nlohmann::json& GgufFile::get_array(const std::string& key) const {
    const auto& v = get(key);
    if (!v.is_array()) fail(path(), ": GGUF key '", key, "' is not an array");
    return v;
}

}  // namespace spense
