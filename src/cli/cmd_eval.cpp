// spense eval: perplexity of a model on (a range of) a text file.
#include <cstdio>
#include <iostream>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/run_info.h"
#include "eval/perplexity.h"
#include "io/text.h"

namespace spense::cli {

int cmd_eval(int argc, char** argv) {
    Args args("eval", "Perplexity over non-overlapping windows of a text file.",
              {{"model", "PATH", "HF checkpoint directory, GGUF file or llama2.c .bin", ""},
               {"data", "FILE", "text file to evaluate on", ""},
               {"range", "A:B", "part of the file to use, as fractions of its bytes", "0:1"},
               {"ctx", "N", "window length in tokens (default: the model's context, at most 2048)", ""},
               {"tokenizer", "PATH", "tokenizer.json or llama2.c tokenizer.bin, overriding the model's", ""},
               {"json", "FILE", "also write the result as JSON to FILE", ""}},
              argc, argv);
    if (args.help_requested()) {
        std::cout << args.usage();
        return 0;
    }
    const std::string model_path = args.required("model"), data_path = args.required("data");
    const TextRange range = TextRange::parse(*args.get("range"));

    Checkpoint ckpt = open_checkpoint(model_path, args.get("tokenizer").value_or(""));
    if (!ckpt.tokenizer) fail(model_path, ": no tokenizer found beside the model (pass --tokenizer PATH)");
    Transformer model = load_transformer(ckpt);
    const ModelConfig& cfg = model.config();
    const int64_t ctx = args.get("ctx") ? args.get_int("ctx") : std::min<int64_t>(cfg.max_positions, 2048);
    if (ctx < 2) fail("--ctx ", ctx, " is too short: a window needs at least 2 tokens");
    if (ctx > cfg.max_positions)
        std::fprintf(stderr, "spense eval: warning: --ctx %lld exceeds the model's max_position_embeddings %lld\n",
                     (long long)ctx, (long long)cfg.max_positions);

    const std::string text = read_text_range(data_path, range);
    const std::vector<int32_t> ids = tokenize_text(*ckpt.tokenizer, text);
    std::fprintf(stderr, "spense eval: %s (%s, %s), %zu bytes of text -> %zu tokens, ctx %lld\n", model_path.c_str(),
                 format_name(ckpt.format), cfg.architecture.c_str(), text.size(), ids.size(), (long long)ctx);

    PerplexityResult r = perplexity(model, ids, ctx);

    std::printf("| model | data | range | ctx | windows | tokens scored | perplexity | time |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    std::printf("| %s | %s | %s | %lld | %lld | %lld | %.4f | %s |\n", model_path.c_str(), data_path.c_str(),
                range.str().c_str(), (long long)r.ctx, (long long)r.windows, (long long)r.predictions,
                r.ppl, format_duration(r.seconds).c_str());

    if (auto json_path = args.get("json")) {
        nlohmann::json j = {{"command", "eval"},
                            {"model", model_path},
                            {"format", format_name(ckpt.format)},
                            {"architecture", cfg.architecture},
                            {"data", data_path},
                            {"range", range.str()},
                            {"text_bytes", text.size()},
                            {"tokens", r.tokens_available},
                            {"ctx", r.ctx},
                            {"windows", r.windows},
                            {"predictions", r.predictions},
                            {"nll_nats", r.nll},
                            {"perplexity", r.ppl},
                            {"seconds", r.seconds},
                            {"run", run_info()}};
        write_file_atomic(*json_path, j.dump(2) + "\n");
    }
    return 0;
}

}  // namespace spense::cli
