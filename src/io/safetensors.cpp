#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/atomic_file.h"
#include "core/error.h"

namespace spense {

namespace {

bool parse_dtype(const std::string& s, DType* out) {
    if (s == "F32") *out = DType::F32;
    else if (s == "F16") *out = DType::F16;
    else if (s == "BF16") *out = DType::BF16;
    else return false;
    return true;
}

const char* safetensors_dtype(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        default: fail("safetensors cannot store dtype ", dtype_name(t));
    }
}

}  // namespace

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
    SafetensorsFile st;
    st.file = MappedFile::open(path);
    const MappedFile& f = *st.file;
    const std::string& p = f.path();
    if (f.size() < 8) fail(p, ": truncated safetensors file (", f.size(), " bytes, the header size alone takes 8)");
    uint64_t header_size;
    std::memcpy(&header_size, f.data(), 8);
    if (header_size > f.size() - 8)
        fail(p, ": truncated or corrupt safetensors file (header claims ", header_size, " bytes, file has ",
             f.size() - 8, " after the size field)");

    nlohmann::json header;
    try {
        header = nlohmann::json::parse(f.data() + 8, f.data() + 8 + header_size);
    } catch (const nlohmann::json::exception& e) {
        fail(p, ": corrupt safetensors header (not valid JSON: ", e.what(), ")");
    }
    if (!header.is_object()) fail(p, ": corrupt safetensors header (not a JSON object)");

    const uint8_t* data = f.data() + 8 + header_size;
    const uint64_t data_size = f.size() - 8 - header_size;
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& name = it.key();
        if (name == "__metadata__") {
            st.metadata = it.value();
            continue;
        }
        const auto& e = it.value();
        if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets") ||
            !e["dtype"].is_string() || !e["shape"].is_array() || !e["data_offsets"].is_array() ||
            e["data_offsets"].size() != 2)
            fail(p, ": corrupt safetensors header (entry '", name, "' lacks dtype, shape or data_offsets)");
        TensorRef t;
        std::string dtype = e["dtype"].get<std::string>();
        if (!parse_dtype(dtype, &t.dtype))
            fail(p, ": tensor '", name, "' has dtype ", dtype, ", which spense does not read (F32, F16 and BF16 are supported)");
        int64_t numel = 1;
        for (const auto& d : e["shape"]) {
            if (!d.is_number_unsigned()) fail(p, ": corrupt safetensors header (tensor '", name, "' has a bad shape)");
            uint64_t v = d.get<uint64_t>();
            if (v > uint64_t(std::numeric_limits<int64_t>::max()) || (v != 0 && uint64_t(numel) > uint64_t(std::numeric_limits<int64_t>::max()) / v))
                fail(p, ": corrupt safetensors header (tensor '", name, "' shape overflows)");
            t.shape.push_back(int64_t(v));
            numel *= int64_t(v);
        }
        const auto& off = e["data_offsets"];
        if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
            fail(p, ": corrupt safetensors header (tensor '", name, "' has bad data_offsets)");
        uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
        uint64_t expected = dtype_bytes(t.dtype, numel);
        if (begin > end || end > data_size)
            fail(p, ": truncated or corrupt safetensors file (tensor '", name, "' spans bytes [", begin, ", ", end,
                 ") of a ", data_size, "-byte data section)");
        if (end - begin != expected)
            fail(p, ": corrupt safetensors header (tensor '", name, "' of shape ", e["shape"].dump(), " and dtype ", dtype,
                 " needs ", expected, " bytes but its offsets span ", end - begin, ")");
        t.data = data + begin;
        t.nbytes = size_t(end - begin);
        t.file = p;
        spans.emplace_back(begin, end);
        st.tensors.emplace(name, std::move(t));
    }
    // The tensors must tile the data section: overlapping tensors would alias each other's bytes.
    std::sort(spans.begin(), spans.end());
    uint64_t cursor = 0;
    for (const auto& [b, e] : spans) {
        if (b != cursor)
            fail(p, ": corrupt safetensors header (data offsets ", b < cursor ? "overlap" : "leave a gap", " at byte ", b, ")");
        cursor = e;
    }
    if (cursor != data_size)
        fail(p, ": corrupt safetensors file (tensors end at byte ", cursor, " of a ", data_size, "-byte data section)");
    return st;
}

uint64_t TensorData::nbytes() const {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    return dtype_bytes(dtype, numel);
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorData>& tensors,
                       const nlohmann::json& metadata) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.is_null()) header["__metadata__"] = metadata;
    uint64_t offset = 0, largest = 0;
    for (const auto& t : tensors) {
        const uint64_t n = t.nbytes();
        header[t.name] = {{"dtype", safetensors_dtype(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
        offset += n;
        largest = std::max(largest, n);
    }
    std::string h = header.dump();
    h.append((8 - h.size() % 8) % 8, ' ');  // align the data section to 8 bytes, as the reference writer does
    uint64_t hs = h.size();
    AtomicFile out(path);
    out.write(&hs, 8);
    out.write(h);
    std::vector<uint8_t> bytes(static_cast<size_t>(largest));
    for (const auto& t : tensors) {
        const std::span<uint8_t> b(bytes.data(), size_t(t.nbytes()));
        t.fill(b);
        out.write(b.data(), b.size());
    }
    out.commit();
}

}  // namespace spense
