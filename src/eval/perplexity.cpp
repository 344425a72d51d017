#include "eval/perplexity.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/progress.h"

namespace spense {

PerplexityResult perplexity(const Transformer& model, std::span<const int32_t> ids, int64_t ctx) {
    SPENSE_CHECK(ctx >= 2, "context length ", ctx, " is too short: a window needs at least 2 tokens");
    PerplexityResult r;
    r.ctx = ctx;
    r.tokens_available = int64_t(ids.size());
    r.windows = r.tokens_available / ctx;
    if (r.windows == 0)
        fail("the text gives ", ids.size(), " tokens, fewer than one window of ", ctx, " (use a larger range or a smaller --ctx)");
    Progress progress("eval: window", r.windows);
    for (int64_t w = 0; w < r.windows; ++w) {
        r.nll += model.sequence_nll(ids.subspan(size_t(w * ctx), size_t(ctx)));
        r.predictions += ctx - 1;
        char detail[64];
        std::snprintf(detail, sizeof detail, "ppl %.4f", std::exp(r.nll / double(r.predictions)));
        progress.update(w + 1, detail);
    }
    r.ppl = std::exp(r.nll / double(r.predictions));
    char detail[64];
    std::snprintf(detail, sizeof detail, "ppl %.4f", r.ppl);
    r.seconds = progress.finish(detail);
    return r;
}

}  // namespace spense
