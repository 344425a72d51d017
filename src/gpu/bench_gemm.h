// spense bench gemm: dense cuBLASLt vs 2:4 (cuSPARSELt, native) vs the Spense MLP, side by side in one run.
//
// For every model shape, GEMM dtype and token count N it times, on random weights generated on the
// GPU (launch_random_weights):
//   - the gate_up and down GEMMs alone on random inputs: dense (cuBLASLt), and the 2:4 weight by
//     cuSPARSELt (on N rounded up to its 16-token granule) and by our own kernel (native_sparse.h,
//     on N), with the backend the selection picks (gemm.h's SparseGemm) and the bandwidth each
//     achieves (weight as stored plus x and y, over the time), beside a read floor: the dense and
//     the 2:4 GEMM's bytes streamed by the plain read kernel (launch_read_buffer) and timed the same
//     way, so that the floors' ratio bounds what any 2:4 kernel can gain over a dense one as timed;
//   - the whole MLP (quantize, gate_up, activation, down) at every dense ratio rho, k = rho * d_ff
//     rounded to a multiple of the alignment: rho = 1 is the dense MLP, rho = 0 plain 2:4; launched
//     call by call, and replayed as a CUDA graph of one MLP, as the decode engine runs its steps
//     (the regions' GEMMs on a forked branch, the libraries' GEMMs with programmatic edges,
//     library_pdl.h).
// Protocol: plans are built (and algorithms searched) in a warm-up call; then each repetition
// evicts L2 by reading a buffer of twice its size, and CUDA events time the operation alone; the
// median of 5 to 100 repetitions (as many as fit the time budget) is reported with min and max.
// The weights of every shape measured exceed L2 or are evicted with it, so each run streams them
// from device memory. Bytes moved (GpuSpenseMlp::traffic) over the device-to-device copy bandwidth
// measured in the same run give each operation's floor. What the timing leaves out: the host's
// launch overhead between operations (the events time the device), and the plan-building call.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu/gemm_dtype.h"

namespace spense::gpu {

struct BenchShape {
    std::string name;
    int64_t hidden = 0, d_ff = 0;
};

// qwen3-32b (5120/25600), qwen3-8b (4096/12288), llama3-8b (4096/14336), or "NAME:HIDDEN:D_FF".
BenchShape parse_bench_shape(const std::string& s);

struct GemmBenchOptions {
    std::vector<BenchShape> shapes;
    std::vector<int64_t> tokens;
    std::vector<double> ratios;  // dense ratios rho of the Spense MLPs; 0 and 1 are always measured
    std::vector<GemmDType> dtypes;
    bool dynamic_scales = true;  // FP8 activation scales
    int64_t align = 128;         // k is a multiple of it
    double budget_ms = 30;       // device time per measurement, bounding the repetitions
    uint64_t seed = 1;
};

// Runs the sweep; prints progress on stderr and the tables (markdown) on `out`; returns the JSON
// report (run and GPU description with library versions, copy bandwidth, every measurement, the
// searched plans, and how long the sweep took).
nlohmann::json run_gemm_bench(const GemmBenchOptions& opt, std::ostream& out);

}  // namespace spense::gpu
