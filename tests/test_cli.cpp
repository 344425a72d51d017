// The spense binary on bad input: a one-line error naming the file and the problem, a non-zero
// exit, never a crash; and the happy path of eval and inspect.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sys/wait.h>

#include "test_paths.h"

namespace {

struct RunResult {
    int exit_code;
    std::string output;  // stdout and stderr together
};

RunResult run(const std::string& args) {
    std::string cmd = spense::test::cli_path().string() + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf;
    while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
    int status = pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

void expect_clean_error(const RunResult& r, const std::string& what) {
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(what), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

}  // namespace

TEST(Cli, BadInputsGiveOneLineErrors) {
    auto dir = spense::test::temp_dir("cli");
    auto data = spense::test::shared_dir() / "data" / "tinystories-valid-1k.txt";
    expect_clean_error(run("inspect " + (dir / "missing").string()), (dir / "missing").string() + ": no such file");
    std::ofstream(dir / "trunc.gguf", std::ios::binary) << "GGUF\x03";
    expect_clean_error(run("inspect " + (dir / "trunc.gguf").string()), "truncated GGUF");
    std::filesystem::create_directories(dir / "gpt2");
    std::ofstream(dir / "gpt2" / "config.json") << R"({"architectures": ["GPT2LMHeadModel"]})";
    std::ofstream(dir / "gpt2" / "model.safetensors", std::ios::binary) << std::string("\x02\0\0\0\0\0\0\0{}", 10);
    expect_clean_error(run("inspect " + (dir / "gpt2").string()), "architecture 'GPT2LMHeadModel' is not supported");
    auto model = (spense::test::fixtures_dir() / "models" / "llama_untied").string();
    expect_clean_error(run("eval --model " + model + " --data " + data.string() + " --range 0.7:0.2"), "range '0.7:0.2'");
    expect_clean_error(run("eval --model " + model + " --data " + data.string() + " --bogus 3"), "unknown option --bogus");
    expect_clean_error(run("eval --data " + data.string()), "--model is required");
    std::filesystem::remove_all(dir);
}

TEST(Cli, InspectReportsShapesAndCounts) {
    RunResult r = run("inspect " + (spense::test::fixtures_dir() / "models" / "qwen3_untied_sharded").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("Qwen3ForCausalLM"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("model.layers.0.self_attn.q_norm.weight"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("4 heads, 2 KV heads, head_dim 32"), std::string::npos) << r.output;
}

TEST(Cli, EvalWritesTableAndJson) {
    auto stories = spense::test::shared_dir() / "models" / "stories260K" / "stories260K.bin";
    if (!std::filesystem::exists(stories)) GTEST_SKIP() << "shared models not found at " << stories;
    auto dir = spense::test::temp_dir("cli-eval");
    auto data = spense::test::shared_dir() / "data" / "tinystories-valid-1k.txt";
    RunResult r = run("eval --model " + stories.string() + " --data " + data.string() + " --range 0.9:1 --ctx 128 --json " +
                      (dir / "eval.json").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("| perplexity |"), std::string::npos) << r.output;
    std::ifstream in(dir / "eval.json");
    std::string json((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(json.find("\"perplexity\""), std::string::npos);
    EXPECT_NE(json.find("\"spense_commit\""), std::string::npos);
    std::filesystem::remove_all(dir);
}
