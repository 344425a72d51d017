#include "gpu/bench_util.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "gpu/check.h"

namespace spense::gpu {

Timing summarize(std::vector<double> t) {
    SPENSE_CHECK(!t.empty(), "summarize: no timings");
    std::sort(t.begin(), t.end());
    const size_t n = t.size();
    return {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t.front(), t.back(), int(n)};
}

BenchStream::BenchStream() { SPENSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "benchmark stream"); }
BenchStream::~BenchStream() { cudaStreamDestroy(stream_); }

std::string fmt(const char* format, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

}  // namespace spense::gpu
