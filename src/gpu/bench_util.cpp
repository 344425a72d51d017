#include "gpu/bench_util.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/run_info.h"
#include "gpu/check.h"
#include "gpu/context.h"

namespace spense::gpu {

nlohmann::json bench_run_info(const GpuContext& ctx) {
    nlohmann::json run = run_info();
    run.update(ctx.describe());
    return run;
}

void print_run_header(std::ostream& out, const std::string& command, const nlohmann::json& run) {
    const auto str = [&](const char* key) { return run.contains(key) ? run[key].get<std::string>() : std::string("?"); };
    out << "# spense " << command << ": " << str("gpu") << " (" << run.value("sms", 0) << " SMs, "
        << run.value("l2_bytes", int64_t(0)) / (1 << 20) << " MiB L2), driver " << str("driver") << "\n\n"
        << "- CUDA runtime " << str("cuda_runtime") << "; cuBLASLt " << str("cublaslt") << " (`" << str("cublaslt_path") << "`); cuSPARSELt "
        << str("cusparselt") << (run.contains("cusparselt_path") ? " (`" + str("cusparselt_path") + "`)" : std::string()) << "\n"
        << "- spense " << str("spense_commit") << ", " << str("time_utc") << ", host " << str("host") << " (" << str("cpu") << ")\n\n";
}

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
