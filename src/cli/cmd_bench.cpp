// spense bench gemm: dense cuBLASLt vs 2:4 cuSPARSELt vs the Spense MLP on the GPU (src/gpu/bench_gemm.h).
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/error.h"

#ifdef SPENSE_HAS_CUDA
#include "gpu/bench_gemm.h"
#endif

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
              "Times dense cuBLASLt, 2:4 cuSPARSELt and the whole Spense MLP side by side on the GPU; markdown tables on stdout.",
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

}  // namespace

int cmd_bench(int argc, char** argv) {
    const std::string usage = "usage: spense bench gemm [options]   (spense bench gemm --help lists them)\n";
    if (argc < 1 || std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h") {
        std::cout << usage;
        return argc < 1 ? 2 : 0;
    }
    const std::string what = argv[0];
    if (what == "gemm") return bench_gemm(argc - 1, argv + 1);
    fail("unknown benchmark '", what, "'; ", usage);
}

}  // namespace spense::cli
