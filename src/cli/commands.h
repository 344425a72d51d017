// The subcommands of the spense tool. Each parses its own options and returns an exit code;
// errors propagate as spense::Error to main(), which prints them on one line.
#pragma once

namespace spense::cli {

int cmd_eval(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_prune(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_generate(int argc, char** argv);

}  // namespace spense::cli
