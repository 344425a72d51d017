// spense bench: placeholder until the GPU benchmarks land (issue 4).
#include "cli/commands.h"
#include "core/error.h"

namespace spense::cli {

int cmd_bench(int, char**) { fail("bench: not implemented yet"); }

}  // namespace spense::cli
