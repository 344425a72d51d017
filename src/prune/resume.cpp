#include "prune/resume.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/mapped_file.h"

namespace spense {

namespace {

std::filesystem::path layer_file(const std::filesystem::path& dir, int64_t l) { return dir / ("layer-" + std::to_string(l) + ".bin"); }

void write_as(AtomicFile& f, const Matrix& m, DType t) {
    switch (t) {
        case DType::F32: f.write(m.data.data(), m.data.size() * sizeof(float)); return;
        case DType::BF16:
        case DType::F16: {
            std::vector<uint16_t> v(m.data.size());
            for (size_t i = 0; i < v.size(); ++i) v[i] = t == DType::BF16 ? f32_to_bf16(m.data[i]) : f32_to_f16(m.data[i]);
            f.write(v.data(), v.size() * sizeof(uint16_t));
            return;
        }
        default: fail("pruning state: weights cannot be stored as ", dtype_name(t));
    }
}

}  // namespace

PruneState::PruneState(std::filesystem::path dir, std::string fingerprint, DType weight_dtype, bool resume)
    : dir_(std::move(dir)), fingerprint_(std::move(fingerprint)), dtype_(weight_dtype) {
    const auto state = dir_ / "state.json";
    if (!std::filesystem::exists(state)) {
        if (resume) fail("--resume: no pruning state at ", dir_.string(), " (nothing to resume; run without --resume)");
        std::filesystem::create_directories(dir_);
        write_state();
        return;
    }
    if (!resume)
        fail(dir_.string(), " holds the state of an interrupted run; continue it with --resume, or delete the directory to start over");
    std::ifstream in(state);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || j.value("version", 0) != 1) fail(state.string(), ": not a pruning state of this version of spense");
    if (j.value("fingerprint", std::string()) != fingerprint_)
        fail(state.string(), ": saved by a run with other options, calibration, model or device; resume with the same command, or delete ",
             dir_.string(), " to start over");
    for (const auto& r : j.at("layers")) reports_.push_back(LayerReport::from_json(r));
}

void PruneState::write_state() const {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& r : reports_) {
        nlohmann::json j = r.to_json();
        j["source_index"] = r.source_index;
        layers.push_back(j);
    }
    const nlohmann::json j = {{"version", 1}, {"fingerprint", fingerprint_}, {"weight_dtype", std::string(dtype_name(dtype_))}, {"layers", layers}};
    write_file_atomic(dir_ / "state.json", j.dump(1) + "\n");
}

DenseMlp PruneState::load_layer(int64_t l, const ModelConfig& cfg) const {
    SPENSE_CHECK(l >= 0 && l < layers_done(), "pruning state: layer ", l, " was not saved");
    const int64_t f = cfg.intermediate, d = cfg.hidden, n = f * d;
    const auto path = layer_file(dir_, l);
    auto file = MappedFile::open(path);
    const size_t elem = size_t(dtype_info(dtype_).block_bytes);
    if (file->size() != size_t(3 * n) * elem) fail(path.string(), ": ", file->size(), " bytes, expected ", 3 * n * int64_t(elem));
    std::vector<float> v[3];
    for (int i = 0; i < 3; ++i) {
        v[i].resize(size_t(n));
        to_f32(dtype_, file->data() + size_t(i * n) * elem, n, v[i].data());
    }
    return DenseMlp(Matrix(f, d, std::move(v[0])), Matrix(f, d, std::move(v[1])), Matrix(d, f, std::move(v[2])));
}

void PruneState::read_weight(int64_t l, MlpProj proj, std::span<uint8_t> bytes) const {
    SPENSE_CHECK(l >= 0 && l < layers_done(), "pruning state: layer ", l, " was not saved");
    const auto path = layer_file(dir_, l);
    const uint64_t each = bytes.size(), expected = 3 * each;
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path, ec);
    if (ec) fail(path.string(), ": cannot read the saved layer (", ec.message(), ")");
    if (size != expected) fail(path.string(), ": ", size, " bytes, expected ", expected, " for three weights of ", each, " bytes");
    std::ifstream in(path, std::ios::binary);
    in.seekg(std::streamoff(uint64_t(proj) * each));
    in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(each));
    if (!in) fail(path.string(), ": cannot read the saved layer");
}

void PruneState::commit_layer(const LayerReport& report, const DenseMlp& mlp) {
    SPENSE_CHECK(report.layer == layers_done(), "pruning state: layer ", report.layer, " saved after ", layers_done(), " layers");
    AtomicFile f(layer_file(dir_, report.layer));
    for (const Matrix* m : {&mlp.gate, &mlp.up, &mlp.down}) write_as(f, *m, dtype_);
    f.commit();
    reports_.push_back(report);
    write_state();
}

void PruneState::remove() { std::filesystem::remove_all(dir_); }

}  // namespace spense
