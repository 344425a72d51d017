#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "core/error.h"

namespace {

constexpr const char* kUsage =
    "usage: spense <command> [options]\n"
    "\n"
    "commands:\n"
    "  eval      perplexity of a model on a text file\n"
    "  inspect   architecture, shapes, dtypes and parameter counts of a checkpoint\n"
    "  prune     one-shot pruning into the Spense format (or a baseline)\n"
    "  generate  greedy generation with the GPU decode engine\n"
    "  bench     GPU benchmarks (bench gemm | prune | decode)\n"
    "\n"
    "spense <command> --help lists a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "help") == 0) {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    std::string cmd = argv[1];
    try {
        if (cmd == "eval") return spense::cli::cmd_eval(argc - 2, argv + 2);
        if (cmd == "inspect") return spense::cli::cmd_inspect(argc - 2, argv + 2);
        if (cmd == "prune") return spense::cli::cmd_prune(argc - 2, argv + 2);
        if (cmd == "bench") return spense::cli::cmd_bench(argc - 2, argv + 2);
        if (cmd == "generate") return spense::cli::cmd_generate(argc - 2, argv + 2);
        std::fprintf(stderr, "spense: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
        return 2;
    } catch (const spense::Error& e) {
        std::fprintf(stderr, "spense %s: error: %s\n", cmd.c_str(), e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "spense %s: error: out of memory\n", cmd.c_str());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "spense %s: internal error: %s\n", cmd.c_str(), e.what());
        return 3;
    }
}
