// spense bench gemm: dense cuBLASLt vs 2:4 cuSPARSELt vs the Spense MLP on the GPU (src/gpu/bench_gemm.h).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/error.h"

#include "prune/pipeline.h"

#ifdef SPENSE_HAS_CUDA
#include "gpu/bench_attention.h"
#include "gpu/bench_decode.h"
#include "gpu/bench_gemm.h"
#include "gpu/bench_prune.h"
#endif
#include "io/checkpoint.h"

namespace spense::cli {

namespace {

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

template <typename T>
std::vector<T> parse_numbers(const std::string& option, const std::string& s) {
    std::vector<T> out;
    for (const auto& item : split_list(s)) {
        try {
            size_t used = 0;
            const double v = std::stod(item, &used);
            if (used != item.size()) throw std::invalid_argument(item);
            out.push_back(T(v));
        } catch (const std::exception&) {
            fail("--", option, ": '", item, "' is not a number");
        }
    }
    if (out.empty()) fail("--", option, " lists nothing");
    return out;
}

int bench_gemm(int argc, char** argv) {
    Args args("bench gemm",
              "Times dense cuBLASLt, 2:4 by cuSPARSELt and by our native kernel, and the whole Spense MLP side by side on the GPU; markdown tables on stdout.",
              {{"models", "LIST", "comma-separated model shapes: qwen3-32b, qwen3-8b, llama3-8b, or NAME:HIDDEN:D_FF", "qwen3-32b,qwen3-8b,llama3-8b"},
               {"n", "LIST", "token counts N", "1,8,16,32,64,128,256,512,1024,2048,4096,8192,16384"},
               {"ratios", "LIST", "dense ratios rho of the Spense MLPs (0 = plain 2:4 and 1 = dense are always measured)", "0,0.25,0.5,1"},
               {"dtypes", "LIST", "GEMM input types: bf16, fp8", "bf16,fp8"},
               {"act-scale", "MODE", "FP8 activation scales: dynamic (amax per call) | static", "dynamic"},
               {"align", "A", "the dense count k is a multiple of A", "128"},
               {"budget-ms", "MS", "device time per measurement, bounding the repetitions (5 to 100)", "30"},
               {"seed", "S", "seed of the random weights and activations", "1"},
               {"json", "FILE", "also write the full report (versions, every measurement, searched plans) as JSON", ""}},
              argc, argv);
    if (args.help_requested()) {
        std::cout << args.usage();
        return 0;
    }
#ifdef SPENSE_HAS_CUDA
    gpu::GemmBenchOptions opt;
    for (const auto& m : split_list(*args.get("models"))) opt.shapes.push_back(gpu::parse_bench_shape(m));
    opt.tokens = parse_numbers<int64_t>("n", *args.get("n"));
    opt.ratios = parse_numbers<double>("ratios", *args.get("ratios"));
    for (const auto& t : split_list(*args.get("dtypes"))) opt.dtypes.push_back(gpu::parse_gemm_dtype(t));
    const std::string scales = *args.get("act-scale");
    if (scales != "dynamic" && scales != "static") fail("--act-scale '", scales, "' is not one of: dynamic, static");
    opt.dynamic_scales = scales == "dynamic";
    opt.align = args.get_int("align");
    opt.budget_ms = args.get_double("budget-ms");
    opt.seed = uint64_t(args.get_int("seed"));
    for (int64_t n : opt.tokens)
        if (n < 1) fail("--n: token counts must be >= 1, got ", n);
    for (double r : opt.ratios)
        if (r < 0 || r > 1) fail("--ratios: dense ratios lie in [0, 1], got ", r);
    if (opt.align < 1) fail("--align must be >= 1");
    const nlohmann::json report = gpu::run_gemm_bench(opt, std::cout);
    if (auto path = args.get("json")) write_file_atomic(*path, report.dump(2) + "\n");
    return 0;
#else
    fail("bench gemm: spense was built without CUDA (no nvcc found at configure time); the benchmarks need a CUDA build and a GPU");
#endif
}

int bench_prune(int argc, char** argv) {
    Args args("bench prune",
              "Times each stage of GPU pruning per decoder layer on a random-weight model (default: Qwen3-32B's layer shape) and "
              "extrapolates to the whole model; markdown tables on stdout.",
              {{"shape", "H:F:NH:KV:HD", "hidden, d_ff, heads, KV heads, head dim", "5120:25600:64:8:128"},
               {"layers", "N", "decoder layers to prune (times are per layer)", "1"},
               {"model-layers", "N", "layers of the whole model, for the extrapolation", "64"},
               {"seqlen", "LIST", "calibration sequence lengths", "2048"},
               {"nsamples", "N", "calibration sequences", "128"},
               {"target-samples", "N", "forward and Hessian times are scaled from --nsamples to this many sequences", "128"},
               {"method", "M", "magnitude | wanda | sparsegpt | spensegpt | spensegpt+", "spensegpt+"},
               {"sparsity", "S", "MLP sparsity", "0.25"},
               {"precision", "P", "GPU matrix products: f32 | tf32 | bf16", "tf32"},
               {"seed", "S", "seed of the random weights and tokens", "1"},
               {"json", "FILE", "also write the report (versions, stages, layers) as JSON", ""}},
              argc, argv);
    if (args.help_requested()) {
        std::cout << args.usage();
        return 0;
    }
#ifdef SPENSE_HAS_CUDA
    gpu::PruneBenchOptions opt;
    const std::vector<int64_t> shape = parse_numbers<int64_t>("shape", [&] {
        std::string s = *args.get("shape");
        for (char& ch : s)
            if (ch == ':') ch = ',';
        return s;
    }());
    if (shape.size() != 5) fail("--shape wants HIDDEN:D_FF:HEADS:KV_HEADS:HEAD_DIM");
    opt.hidden = shape[0];
    opt.d_ff = shape[1];
    opt.heads = shape[2];
    opt.kv_heads = shape[3];
    opt.head_dim = shape[4];
    opt.layers = args.get_int("layers");
    opt.model_layers = args.get_int("model-layers");
    opt.seqlens = parse_numbers<int64_t>("seqlen", *args.get("seqlen"));
    opt.nsamples = args.get_int("nsamples");
    opt.target_samples = args.get_int("target-samples");
    opt.prune.method = parse_prune_method(*args.get("method"));
    opt.prune.sparsity = std::stod(*args.get("sparsity"));
    opt.gpu.math = gpu::parse_gpu_math(*args.get("precision"));
    opt.seed = uint64_t(args.get_int("seed"));
    if (opt.layers < 1 || opt.nsamples < 1 || opt.target_samples < 1) fail("--layers, --nsamples and --target-samples must be >= 1");
    const nlohmann::json report = gpu::run_prune_bench(opt, std::cout);
    if (auto path = args.get("json")) write_file_atomic(*path, report.dump(2) + "\n");
    return 0;
#else
    fail("bench prune: spense was built without CUDA (no nvcc found at configure time); the benchmark needs a CUDA build and a GPU");
#endif
}

int bench_decode(int argc, char** argv) {
    Args args("bench decode",
              "Times decode steps of the GPU engine on a random-weight model built from a config.json, dense MLPs against Spense "
              "MLPs, with each step's floor (weights + KV cache bytes over the measured read bandwidth); markdown tables on stdout.",
              {{"config", "FILE", "an HF config.json (e.g. configs/qwen3-32b.json)", ""},
               {"batch", "B", "sequences decoded together", "32"},
               {"ctx", "LIST", "tokens already in each sequence's KV cache", "0,1024,4096"},
               {"sparsity", "LIST", "MLP sparsities: 0 = dense, s > 0 = Spense with dense ratio 1 - 2s (0.5 = plain 2:4)", "0,0.25,0.375,0.5"},
               {"dtype", "T", "weights and GEMM inputs: fp8 | bf16", "fp8"},
               {"align", "A", "the dense count is a multiple of A", "128"},
               {"steps", "N", "timed steps per measurement (the median is reported)", "30"},
               {"seed", "S", "seed of the random weights", "1"},
               {"json", "FILE", "also write the report (versions, bandwidths, every measurement) as JSON", ""}},
              argc, argv);
    if (args.help_requested()) {
        std::cout << args.usage();
        return 0;
    }
#ifdef SPENSE_HAS_CUDA
    gpu::DecodeBenchOptions opt;
    const std::string config_path = args.required("config");
    opt.config = ModelConfig::from_hf(read_json_file(config_path), config_path);
    opt.config_name = std::filesystem::path(config_path).stem().string();
    opt.batch = args.get_int("batch");
    opt.contexts = parse_numbers<int64_t>("ctx", *args.get("ctx"));
    opt.sparsities = parse_numbers<double>("sparsity", *args.get("sparsity"));
    opt.dtype = gpu::parse_gemm_dtype(*args.get("dtype"));
    opt.align = args.get_int("align");
    opt.steps = args.get_int("steps");
    opt.seed = uint64_t(args.get_int("seed"));
    if (opt.batch < 1 || opt.steps < 1 || opt.align < 1) fail("--batch, --steps and --align must be >= 1");
    const nlohmann::json report = gpu::run_decode_bench(opt, std::cout);
    if (auto path = args.get("json")) write_file_atomic(*path, report.dump(2) + "\n");
    return 0;
#else
    fail("bench decode: spense was built without CUDA (no nvcc found at configure time); the benchmark needs a CUDA build and a GPU");
#endif
}

int bench_attention(int argc, char** argv) {
    Args args("bench attention",
              "Times the decode attention kernel of the decode engine (q/k norms, RoPE, cache append, flash-decoding; BF16 and FP8 output) at one decode shape; "
              "markdown table on stdout.",
              {{"shape", "B:H:KV:HD:CTX", "batch, heads, KV heads, head dim, cache capacity (Qwen3-32B at batch 32)", "32:64:8:128:4096"},
               {"window", "W", "sliding window (0: full causal)", "0"},
               {"lengths", "LIST", "cache lengths (all sequences equal)", "1,1024,4096"},
               {"chunks", "LIST", "positions per block, multiples of 64 (0: the automatic choice)", "0"},
               {"reps", "N", "timed repetitions", "50"},
               {"seed", "S", "seed of the random q and cache", "1"},
               {"json", "FILE", "also write the report as JSON", ""}},
              argc, argv);
    if (args.help_requested()) {
        std::cout << args.usage();
        return 0;
    }
#ifdef SPENSE_HAS_CUDA
    gpu::AttentionBenchOptions opt;
    const std::vector<int64_t> shape = parse_numbers<int64_t>("shape", [&] {
        std::string s = *args.get("shape");
        std::replace(s.begin(), s.end(), ':', ',');
        return s;
    }());
    if (shape.size() != 5) fail("--shape wants BATCH:HEADS:KV_HEADS:HEAD_DIM:MAX_CTX");
    opt.shape = {shape[0], shape[1], shape[2], shape[3], shape[4], args.get_int("window")};
    opt.lengths = parse_numbers<int64_t>("lengths", *args.get("lengths"));
    opt.chunks = parse_numbers<int64_t>("chunks", *args.get("chunks"));
    opt.reps = int(args.get_int("reps"));
    opt.seed = uint64_t(args.get_int("seed"));
    const nlohmann::json report = gpu::run_attention_bench(opt, std::cout);
    if (auto path = args.get("json")) write_file_atomic(*path, report.dump(2) + "\n");
    return 0;
#else
    fail("bench attention: spense was built without CUDA (no nvcc found at configure time); the benchmark needs a CUDA build and a GPU");
#endif
}

}  // namespace

int cmd_bench(int argc, char** argv) {
    const std::string usage = "usage: spense bench gemm|prune|decode|attention [options]   (spense bench gemm --help lists them)\n";
    if (argc < 1 || std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h") {
        std::cout << usage;
        return argc < 1 ? 2 : 0;
    }
    const std::string what = argv[0];
    if (what == "gemm") return bench_gemm(argc - 1, argv + 1);
    if (what == "prune") return bench_prune(argc - 1, argv + 1);
    if (what == "attention") return bench_attention(argc - 1, argv + 1);
    if (what == "decode") return bench_decode(argc - 1, argv + 1);
    fail("unknown benchmark '", what, "'; ", usage);
}

}  // namespace spense::cli
