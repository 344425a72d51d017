#include "gpu/bench_prune.h"

#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "core/error.h"
#include "core/progress.h"
#include "gpu/bench_util.h"
#include "gpu/context.h"

namespace spense::gpu {

namespace {

// Uniform +-sqrt(3 / fan_in) (unit-variance outputs for unit-variance inputs), a pure function
// of (seed, index) so that the fill parallelizes.
Matrix random_matrix(int64_t rows, int64_t cols, uint64_t seed) {
    Matrix m(rows, cols);
    const float a = float(std::sqrt(3.0 / double(cols)));
#pragma omp parallel for
    for (int64_t i = 0; i < rows * cols; ++i) {
        uint64_t z = seed * 0x9e3779b97f4a7c15ull + uint64_t(i) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
        z ^= z >> 29;
        m.data[size_t(i)] = a * (float(double(z >> 40) / double(1ull << 24)) * 2.0f - 1.0f);
    }
    return m;
}

Transformer random_model(const PruneBenchOptions& o, int64_t max_positions) {
    ModelConfig c;
    c.architecture = "Qwen3ForCausalLM";
    c.arch = Arch::Qwen3;
    c.hidden = o.hidden;
    c.intermediate = o.d_ff;
    c.n_layers = o.layers;
    c.n_heads = o.heads;
    c.n_kv_heads = o.kv_heads;
    c.head_dim = o.head_dim;
    c.vocab = 1024;
    c.max_positions = max_positions;
    c.rope_theta = 1e6;
    c.qk_norm = true;
    ModelWeights w;
    w.embed = random_matrix(c.vocab, c.hidden, o.seed);
    w.final_norm.assign(size_t(c.hidden), 1.0f);
    for (int64_t l = 0; l < c.n_layers; ++l) {
        const uint64_t s = o.seed + 100 * uint64_t(l + 1);
        LayerWeights lw;
        lw.input_norm.assign(size_t(c.hidden), 1.0f);
        lw.post_norm.assign(size_t(c.hidden), 1.0f);
        lw.attn.q = random_matrix(c.n_heads * c.head_dim, c.hidden, s + 1);
        lw.attn.k = random_matrix(c.n_kv_heads * c.head_dim, c.hidden, s + 2);
        lw.attn.v = random_matrix(c.n_kv_heads * c.head_dim, c.hidden, s + 3);
        lw.attn.o = random_matrix(c.hidden, c.n_heads * c.head_dim, s + 4);
        lw.attn.q_norm.assign(size_t(c.head_dim), 1.0f);
        lw.attn.k_norm.assign(size_t(c.head_dim), 1.0f);
        lw.mlp = std::make_unique<DenseMlp>(random_matrix(c.intermediate, c.hidden, s + 5), random_matrix(c.intermediate, c.hidden, s + 6),
                                            random_matrix(c.hidden, c.intermediate, s + 7));
        w.layers.push_back(std::move(lw));
    }
    return Transformer(c, std::move(w));
}

}  // namespace

nlohmann::json run_prune_bench(const PruneBenchOptions& opt, std::ostream& out) {
    nlohmann::json report = {{"run", nullptr},
                             {"shape",
                              {{"hidden", opt.hidden},
                               {"d_ff", opt.d_ff},
                               {"heads", opt.heads},
                               {"kv_heads", opt.kv_heads},
                               {"head_dim", opt.head_dim},
                               {"layers", opt.layers},
                               {"model_layers", opt.model_layers}}},
                             {"options", opt.prune.to_json()},
                             {"precision", gpu_math_name(opt.gpu.math)},
                             {"results", nlohmann::json::array()}};
    {
        GpuContext ctx;
        report["run"] = bench_run_info(ctx);
        print_run_header(out, "bench prune", report["run"]);
    }
    for (const int64_t seqlen : opt.seqlens) {
        Transformer model = random_model(opt, seqlen);
        CalibrationSet calib;
        std::mt19937_64 rng(opt.seed);
        std::uniform_int_distribution<int32_t> tok(0, int32_t(model.config().vocab - 1));
        for (int64_t s = 0; s < opt.nsamples; ++s) {
            calib.samples.emplace_back(size_t(seqlen));
            for (auto& t : calib.samples.back()) t = tok(rng);
        }
        GpuPruneBackend backend(model, opt.gpu);
        const PruneReport r = prune_model(model, calib, opt.prune, backend, nullptr);
        const nlohmann::json dev = backend.describe();
        const double per_layer_total = r.seconds / double(opt.layers);
        const double scale = double(opt.target_samples) / double(opt.nsamples);
        nlohmann::json stages = nlohmann::json::object();
        double staged = 0, extrapolated = 0;
        out << "\n### " << opt.nsamples << " x " << seqlen << " calibration tokens (" << dev["activations"].get<std::string>()
            << "-resident activations, " << gpu_math_name(opt.gpu.math) << " products)\n\n";
        out << "| stage | s / layer (measured) | s / layer at " << opt.target_samples << " samples | x " << opt.model_layers << " layers |\n|---|---|---|---|\n";
        char line[256];
        const double embed = dev["stage_seconds"].value("embed", 0.0);
        for (const auto& [name, seconds] : dev["stage_seconds"].items()) {
            if (name == "embed") continue;  // once per run, not per layer
            const double per_layer = seconds.get<double>() / double(opt.layers);
            const bool token_bound = name == "forward" || name == "hessian";
            const double at_target = per_layer * (token_bound ? scale : 1.0);
            stages[name] = {{"seconds_per_layer", per_layer}, {"seconds_per_layer_at_target", at_target}};
            staged += per_layer;
            extrapolated += at_target;
            std::snprintf(line, sizeof line, "| %s | %.3f | %.3f | %s |\n", name.c_str(), per_layer, at_target,
                          format_duration(at_target * double(opt.model_layers)).c_str());
            out << line;
        }
        // Host-side work between the stages: permutations, weight uploads and downloads.
        const double other = std::max(0.0, per_layer_total - embed / double(opt.layers) - staged);
        extrapolated += other;
        std::snprintf(line, sizeof line, "| other (host: permutations, copies) | %.3f | %.3f | %s |\n| **total** | %.3f | %.3f | **%s** |\n", other,
                      other, format_duration(other * double(opt.model_layers)).c_str(), per_layer_total, extrapolated,
                      format_duration(extrapolated * double(opt.model_layers) + embed * scale).c_str());
        out << line;
        rusage u{};
        getrusage(RUSAGE_SELF, &u);
        std::snprintf(line, sizeof line, "\nembedding the calibration (once per run): %.2f s; peak memory: GPU %.1f GiB, host %.1f GiB\n", embed, dev["peak_device_bytes"].get<double>() / double(1ull << 30),
                      double(u.ru_maxrss) * 1024.0 / double(1ull << 30));
        out << line;
        out.flush();
        report["results"].push_back({{"seqlen", seqlen},
                                     {"nsamples", opt.nsamples},
                                     {"target_samples", opt.target_samples},
                                     {"seconds_per_layer", per_layer_total},
                                     {"seconds_per_layer_at_target", extrapolated},
                                     {"model_seconds_at_target", extrapolated * double(opt.model_layers) + embed * scale},
                                     {"stages", stages},
                                     {"embed_seconds", embed},
                                     {"backend", dev},
                                     {"peak_host_bytes", int64_t(u.ru_maxrss) * 1024},
                                     {"layers", nlohmann::json::array()}});
        for (const auto& l : r.layers) report["results"].back()["layers"].push_back(l.to_json());
    }
    return report;
}

}  // namespace spense::gpu
