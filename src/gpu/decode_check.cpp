#include "gpu/decode_check.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"

namespace spense::gpu {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int32_t argmax_row(const Matrix& m, int64_t r) {
    const float* p = m.row(r);
    return int32_t(std::max_element(p, p + m.cols) - p);
}

}  // namespace

Generation greedy_generate(DecodeEngine& engine, std::span<const int32_t> prompt, int64_t new_tokens, bool keep_prompt_logits,
                           const std::function<void(int32_t)>& on_token) {
    SPENSE_CHECK(engine.options().batch == 1, "greedy_generate: needs a batch-1 engine, this one decodes ", engine.options().batch);
    SPENSE_CHECK(!prompt.empty(), "greedy_generate: the prompt is empty (it needs at least one token, e.g. BOS)");
    SPENSE_CHECK(int64_t(prompt.size()) + new_tokens <= engine.options().max_ctx, "greedy_generate: ", prompt.size(), " prompt + ",
                 new_tokens, " new tokens exceed the cache of ", engine.options().max_ctx);
    Generation g;
    const int64_t vocab = engine.config().vocab;
    if (keep_prompt_logits) g.prompt_logits = Matrix(int64_t(prompt.size()), vocab);
    engine.set_lengths(std::vector<int32_t>{0});
    auto t0 = std::chrono::steady_clock::now();
    for (size_t t = 0; t < prompt.size(); ++t) {
        engine.step(prompt.subspan(t, 1));
        if (keep_prompt_logits) {
            const Matrix l = engine.logits();
            std::copy_n(l.row(0), vocab, g.prompt_logits.row(int64_t(t)));
        }
    }
    int32_t next = engine.next_tokens()[0];
    g.prefill_seconds = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < new_tokens; ++i) {
        g.tokens.push_back(next);
        if (on_token) on_token(next);
        if (i + 1 == new_tokens) break;
        engine.step();
        next = engine.next_tokens()[0];
    }
    g.decode_seconds = seconds_since(t0);
    return g;
}

CpuComparison compare_with_cpu(DecodeEngine& engine, const Transformer& cpu, std::span<const int32_t> prompt, int64_t new_tokens) {
    CpuComparison c;
    c.prompt_tokens = int64_t(prompt.size());
    const Generation g = greedy_generate(engine, prompt, new_tokens, true);
    c.engine_tokens = g.tokens;
    const Matrix ref = cpu.forward(prompt);
    for (int64_t t = 0; t < ref.rows; ++t) {
        double err2 = 0, ref2 = 0, err_max = 0, ref_max = 0;
        for (int64_t j = 0; j < ref.cols; ++j) {
            const double e = double(g.prompt_logits.row(t)[j]) - double(ref.row(t)[j]), r = ref.row(t)[j];
            err2 += e * e;
            ref2 += r * r;
            err_max = std::max(err_max, std::fabs(e));
            ref_max = std::max(ref_max, std::fabs(r));
        }
        const double rel = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
        if (rel > c.rel_logit_error) {
            c.rel_logit_error = rel;
            c.worst_position = t;
        }
        c.max_logit_error = std::max(c.max_logit_error, ref_max > 0 ? err_max / ref_max : err_max);
    }
    std::vector<int32_t> seq(prompt.begin(), prompt.end());
    Matrix last = ref;
    bool differ = false;
    for (int64_t i = 0; i < new_tokens; ++i) {
        const int32_t mine = argmax_row(last, last.rows - 1);
        c.cpu_tokens.push_back(mine);
        if (!differ && mine == c.engine_tokens[size_t(i)]) {
            ++c.matching_tokens;
        } else if (!differ) {
            differ = true;
            const float* row = last.row(last.rows - 1);
            c.first_difference_margin = double(row[mine]) - double(row[c.engine_tokens[size_t(i)]]);
        }
        if (i + 1 == new_tokens) break;
        seq.push_back(mine);
        last = cpu.forward(seq);
    }
    return c;
}

nlohmann::json CpuComparison::json() const {
    return {{"prompt_tokens", prompt_tokens},
            {"rel_logit_error", rel_logit_error},
            {"max_logit_error", max_logit_error},
            {"worst_position", worst_position},
            {"engine_tokens", engine_tokens},
            {"cpu_tokens", cpu_tokens},
            {"matching_tokens", matching_tokens},
            {"first_difference_margin", first_difference_margin}};
}

}  // namespace spense::gpu
