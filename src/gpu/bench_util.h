// What the GPU benchmarks share: the run description that heads their reports, the summary of
// repeated timings and the number format of their tables.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <nlohmann/json.hpp>

namespace spense::gpu {

class GpuContext;

// A report's "run": spense's commit, the time and the machine (core/run_info.h), with the GPU,
// driver and library versions and paths as loaded (GpuContext::describe).
nlohmann::json bench_run_info(const GpuContext& ctx);
// The lines that open a benchmark's markdown: what ran, on which GPU and libraries, from which commit.
void print_run_header(std::ostream& out, const std::string& command, const nlohmann::json& run);

struct Timing {
    double median = 0, min = 0, max = 0;
    int reps = 0;
    nlohmann::json json() const { return {{"median", median}, {"min", min}, {"max", max}, {"reps", reps}}; }
};

// Median (the mean of the middle two for an even count), min and max of at least one time.
Timing summarize(std::vector<double> times);

// A non-blocking stream for the length of a benchmark.
class BenchStream {
public:
    BenchStream();
    ~BenchStream();
    BenchStream(const BenchStream&) = delete;
    BenchStream& operator=(const BenchStream&) = delete;
    cudaStream_t get() const { return stream_; }

private:
    cudaStream_t stream_ = nullptr;
};

// printf-style formatting of one number, for table cells.
std::string fmt(const char* format, double v);

}  // namespace spense::gpu
