// Perplexity over non-overlapping windows: the token stream is cut into floor(N / ctx) windows
// of ctx tokens (the tail that does not fill a window is left out), each window is run from an
// empty context, and every position but the first predicts its successor:
//   ppl = exp( sum_w sum_{t=0}^{ctx-2} -log p(x_{w,t+1} | x_{w,0..t}) / (windows * (ctx - 1)) )
#pragma once

#include <cstdint>
#include <span>

#include "model/transformer.h"

namespace spense {

struct PerplexityResult {
    int64_t ctx = 0;
    int64_t windows = 0;
    int64_t tokens_available = 0;
    int64_t predictions = 0;
    double nll = 0;  // summed negative log-likelihood, nats
    double ppl = 0;
    double seconds = 0;
};

// Throws if the stream is shorter than one window. Shows progress per window on stderr.
PerplexityResult perplexity(const Transformer& model, std::span<const int32_t> ids, int64_t ctx);

}  // namespace spense
