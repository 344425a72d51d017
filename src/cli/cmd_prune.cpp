// spense prune: placeholder until the pruning pipeline lands (issue 3).
#include "cli/commands.h"
#include "core/error.h"

namespace spense::cli {

int cmd_prune(int, char**) { fail("prune: not implemented yet"); }

}  // namespace spense::cli
