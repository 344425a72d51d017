// spense prune: one-shot pruning of every MLP into the Spense format (or a baseline), written as
// an HF checkpoint plus spense.json.
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/run_info.h"
#include "format/hf_writer.h"
#include "prune/cpu_backend.h"
#include "prune/pipeline.h"
#include "prune/resume.h"

#ifdef SPENSE_HAS_CUDA
#include "gpu/gpu_pruner.h"
#endif

namespace spense::cli {

namespace {

// "0.25", "25%" or "2:4" (= 0.5).
double parse_sparsity(const std::string& s) {
    if (s == "2:4") return 0.5;
    try {
        size_t used = 0;
        double v = std::stod(s, &used);
        if (used == s.size()) return v;
        if (used + 1 == s.size() && s.back() == '%') return v / 100.0;
    } catch (const std::exception&) {
    }
    fail("--sparsity '", s, "' is not a number (0.25), a percentage (25%) or 2:4");
}

DType parse_weight_dtype(const std::string& s) {
    if (s == "f32" || s == "float32") return DType::F32;
    if (s == "bf16" || s == "bfloat16") return DType::BF16;
    if (s == "f16" || s == "float16") return DType::F16;
    fail("--dtype '", s, "' is not one of: f32, bf16, f16");
}

// The source's own storage type where it is one we write, else float32 (GGUF quantizations).
DType source_dtype(const Checkpoint& ckpt) {
    DType t = ckpt.tensor(layer_tensor(0, "mlp.gate_proj.weight")).dtype;
    return t == DType::BF16 || t == DType::F16 ? t : DType::F32;
}

// The backend of --device: the CPU reference, or the GPU (CUDA builds).
std::unique_ptr<PruneBackend> make_backend(const std::string& device, const Transformer& model, const std::string& precision,
                                           double activation_gb) {
    if (device == "cpu") {
        if (precision != "f32") fail("--precision ", precision, " is for --device cuda; the CPU computes in float32");
        return std::make_unique<CpuPruneBackend>(model);
    }
    if (device != "cuda") fail("--device '", device, "' is not one of: cpu, cuda");
#ifdef SPENSE_HAS_CUDA
    gpu::GpuPruneOptions g;
    g.math = gpu::parse_gpu_math(precision);
    if (activation_gb >= 0) g.activation_budget_bytes = int64_t(activation_gb * double(1ull << 30));
    return std::make_unique<gpu::GpuPruneBackend>(model, g);
#else
    (void)model;
    (void)activation_gb;
    fail("--device cuda: spense was built without CUDA (no nvcc found at configure time); use --device cpu or a CUDA build");
#endif
}

// The peak resident memory of this process (getrusage).
int64_t peak_host_bytes() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return int64_t(u.ru_maxrss) * 1024;
}

}  // namespace

int cmd_prune(int argc, char** argv) {
    Args args("prune", "One-shot pruning of every MLP into the Spense format (or a baseline), written as an HF checkpoint.",
              {{"model", "PATH", "HF checkpoint directory, GGUF file or llama2.c .bin", ""},
               {"calib", "FILE", "calibration text", ""},
               {"method", "M", "magnitude | wanda | sparsegpt | spensegpt | spensegpt+", ""},
               {"sparsity", "S", "MLP sparsity: 0.5 (2:4), 0.375 or 0.25 (Spense); any in (0,1) with --pattern unstructured", ""},
               {"out", "DIR", "output directory (must not exist)", ""},
               {"pattern", "P", "2:4 | unstructured (baselines only)", "2:4"},
               {"nsamples", "N", "calibration sequences", "128"},
               {"seqlen", "L", "tokens per calibration sequence (default: the model's context, at most 2048)", ""},
               {"range", "A:B", "part of the calibration file to draw from", "0:1"},
               {"seed", "S", "seed of the calibration sampling", "0"},
               {"align", "A", "the dense count k is a multiple of A", "128"},
               {"score", "S", "SpenseGPT+ dense-index score: wanda | sparsegpt", "wanda"},
               {"layout", "L", "SpenseGPT+ dense-index layout while pruning: back | front | inplace", "back"},
               {"percdamp", "F", "SparseGPT damping, as a fraction of the mean Hessian diagonal", "0.01"},
               {"blocksize", "B", "SparseGPT column block size", "128"},
               {"dtype", "T", "stored weight type: f32 | bf16 | f16 (default: the source's, f32 for GGUF)", ""},
               {"tokenizer", "PATH", "tokenizer.json or llama2.c tokenizer.bin, overriding the model's", ""},
               {"device", "D", "where the calibration forward, Hessians and SparseGPT run: cpu | cuda", "cpu"},
               {"precision", "P", "GPU matrix products: f32 | tf32 | bf16 (FP32 accumulate; Cholesky always float64)", "f32"},
               {"activation-gb", "GB", "GPU memory for calibration activations; the rest stay on the host in chunks (default: what fits)", ""},
               {"resume", "", "continue the interrupted run whose state is in OUT.partial", ""}},
              argc, argv);
    if (args.help_requested()) {
        std::cout << args.usage();
        return 0;
    }
    const std::string model_path = args.required("model"), out = args.required("out");
    PruneOptions opt;
    opt.method = parse_prune_method(args.required("method"));
    opt.sparsity = parse_sparsity(args.required("sparsity"));
    const std::string pattern = *args.get("pattern");
    if (pattern != "2:4" && pattern != "unstructured") fail("--pattern '", pattern, "' is not one of: 2:4, unstructured");
    opt.pattern = pattern == "2:4" ? PruneSpec::Pattern::TwoFour : PruneSpec::Pattern::Unstructured;
    opt.align = args.get_int("align");
    opt.score = parse_index_score(*args.get("score"));
    opt.layout = parse_dense_layout(*args.get("layout"));
    opt.sparsegpt.percdamp = args.get_double("percdamp");
    opt.sparsegpt.blocksize = args.get_int("blocksize");
    CalibrationOptions copt;
    copt.file = args.required("calib");
    copt.range = TextRange::parse(*args.get("range"));
    copt.nsamples = args.get_int("nsamples");
    copt.seed = uint64_t(args.get_int("seed"));
    check_new_output_dir(out);

    Checkpoint ckpt = open_checkpoint(model_path, args.get("tokenizer").value_or(""));
    if (!ckpt.tokenizer) fail(model_path, ": no tokenizer found beside the model (pass --tokenizer PATH)");
    ModelConfig cfg = ModelConfig::from_hf(ckpt.config, model_path);
    opt.weight_dtype = args.get("dtype") ? parse_weight_dtype(*args.get("dtype")) : source_dtype(ckpt);
    const int64_t k = opt.validate(cfg);
    copt.seqlen = args.get("seqlen") ? args.get_int("seqlen") : std::min<int64_t>(cfg.max_positions, 2048);

    const std::string device = *args.get("device");
    const bool resume = args.flag("resume");
    CalibrationSet calib = sample_calibration(*ckpt.tokenizer, copt);
    std::fprintf(stderr, "spense prune: %s (%s), %lld layers, d_ff %lld; %s at MLP sparsity %g, dense k = %lld; calibration %lld x %lld tokens from %lld\n",
                 model_path.c_str(), cfg.architecture.c_str(), (long long)cfg.n_layers, (long long)cfg.intermediate,
                 prune_method_name(opt.method), opt.sparsity, (long long)k, (long long)copt.nsamples, (long long)copt.seqlen,
                 (long long)calib.stream_tokens);

    // The MLPs, the bulk of the weights, are loaded one layer at a time by the pipeline and the
    // pruned ones kept in the state until written: host memory holds the rest of the model and
    // one layer's MLP, so that models whose float32 weights exceed it can be pruned.
    Transformer model = load_transformer(ckpt, MlpWeights::Skip);
    round_weights(model.weights(), opt.weight_dtype);
    std::unique_ptr<PruneBackend> backend =
        make_backend(device, model, *args.get("precision"), args.get("activation-gb") ? args.get_double("activation-gb") : -1.0);
    // Whatever identifies the run: a state saved by another run is never continued.
    const nlohmann::json fingerprint = {{"model", model_path},
                                        {"options", opt.to_json()},
                                        {"calibration", calib.describe(copt)},
                                        {"device", device},
                                        {"precision", *args.get("precision")}};
    PruneState state(out + ".partial", fingerprint.dump(), opt.weight_dtype, resume);
    PruneReport report = prune_model(model, ckpt, calib, opt, *backend, state);
    const int64_t host_peak = peak_host_bytes();  // of the pruning, for spense.json (written after it)

    nlohmann::json layers = nlohmann::json::array();
    // Zeros in the MLP weights, counted from each weight's fraction (its three weights have
    // d_ff x hidden elements each).
    const int64_t per_weight = cfg.intermediate * cfg.hidden;
    int64_t zeros = 0, total = 0;
    for (const auto& l : report.layers) {
        nlohmann::json j = l.to_json();
        j["dense_region"] = {cfg.intermediate - l.dense, cfg.intermediate};
        layers.push_back(j);
        for (const LinearReport* r : {&l.gate, &l.up, &l.down}) zeros += std::llround(r->sparsity * double(per_weight));
        total += 3 * per_weight;
    }
    nlohmann::json spense_json = {{"format", "spense"},
                                  {"version", 1},
                                  {"source", {{"path", model_path}, {"format", format_name(ckpt.format)}}},
                                  {"intermediate_size", cfg.intermediate},
                                  {"dense_count", k},
                                  {"options", opt.to_json()},
                                  {"calibration", calib.describe(copt)},
                                  {"mlp_sparsity", double(zeros) / double(total)},
                                  {"pruning_seconds", report.seconds},
                                  {"resumed_at_layer", report.resumed_at},
                                  {"device", report.backend},
                                  {"peak_host_bytes", host_peak},
                                  {"layers", layers},
                                  {"run", run_info()}};
    // The pruned MLPs are copied from the state as saved (already in the output dtype); the state
    // is removed only once the checkpoint is complete.
    const MlpBytes from_state = [&state](int64_t l, MlpProj p, std::span<uint8_t> bytes) { state.read_weight(l, p, bytes); };
    write_hf_checkpoint(out, ckpt, cfg, hf_tensors(model, opt.weight_dtype, from_state), opt.weight_dtype, spense_json);
    state.remove();

    std::printf("| layer | dense k | gate err (mask -> final) | up err | down err | mlp err | time |\n|---|---|---|---|---|---|---|\n");
    for (const auto& l : report.layers)
        std::printf("| %lld | %lld | %.4f -> %.4f | %.4f -> %.4f | %.4f -> %.4f | %.4f | %s |\n", (long long)l.layer, (long long)l.dense,
                    l.gate.masked_error, l.gate.error, l.up.masked_error, l.up.error, l.down.masked_error, l.down.error, l.mlp_error,
                    format_duration(l.seconds).c_str());
    std::printf("\n%s: %s at MLP sparsity %.4f (zeros in MLP weights), pruned in %s on %s, written to %s\n", model_path.c_str(),
                prune_method_name(opt.method), double(zeros) / double(total), format_duration(report.seconds).c_str(), device.c_str(),
                out.c_str());
    std::printf("peak memory: host %.2f GiB", double(peak_host_bytes()) / double(1ull << 30));  // of the whole run
    if (report.backend.contains("peak_device_bytes")) {
        const double gib = double(1ull << 30), peak = report.backend["peak_device_bytes"].get<double>() / gib,
                     start = report.backend["device_bytes_in_use_at_start"].get<double>() / gib;
        std::printf(", GPU %.2f GiB (device-wide peak %.2f GiB, of which %.2f GiB were in use at the start)", peak - start, peak, start);
    }
    std::printf("\n");
    return 0;
}

}  // namespace spense::cli
