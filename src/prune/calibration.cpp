#include "prune/calibration.h"

#include <cstdio>
#include <random>

#include "core/error.h"

namespace spense {

CalibrationSet sample_calibration(const Tokenizer& tok, const CalibrationOptions& opt) {
    SPENSE_CHECK(opt.nsamples > 0 && opt.seqlen > 1, "calibration needs --nsamples >= 1 and --seqlen >= 2 (got ", opt.nsamples,
                 " and ", opt.seqlen, ")");
    const std::string text = read_text_range(opt.file, opt.range);
    const std::vector<int32_t> ids = tokenize_text(tok, text);
    if (int64_t(ids.size()) < opt.seqlen)
        fail(opt.file.string(), ": range ", opt.range.str(), " gives ", ids.size(), " tokens, fewer than one calibration sequence of ",
             opt.seqlen, " (use a larger --range or a smaller --seqlen)");
    CalibrationSet set;
    set.stream_tokens = int64_t(ids.size());
    std::mt19937_64 rng(opt.seed);
    std::uniform_int_distribution<int64_t> start(0, int64_t(ids.size()) - opt.seqlen);
    for (int64_t s = 0; s < opt.nsamples; ++s) {
        const int64_t b = start(rng);
        set.samples.emplace_back(ids.begin() + b, ids.begin() + b + opt.seqlen);
    }
    return set;
}

uint64_t CalibrationSet::fingerprint() const {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const auto& sample : samples)
        for (int32_t id : sample)
            for (int byte = 0; byte < 4; ++byte) {
                h ^= (uint32_t(id) >> (8 * byte)) & 0xffu;
                h *= 0x100000001b3ull;
            }
    return h;
}

nlohmann::json CalibrationSet::describe(const CalibrationOptions& opt) const {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)fingerprint());
    return {{"file", opt.file.string()}, {"range", opt.range.str()}, {"nsamples", opt.nsamples}, {"seqlen", opt.seqlen},
            {"seed", opt.seed},          {"stream_tokens", stream_tokens}, {"tokens_fnv1a64", hex}};
}

}  // namespace spense
