#include "gpu/context.h"

#include <dlfcn.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gpu/check.h"
#include "gpu/kernels.h"
#include "gpu/plan_cache.h"
#include "gpu/spense_mlp.h"

namespace spense::gpu {

namespace {

// The kernel module's version from /proc/driver/nvidia/version ("NVRM version: NVIDIA UNIX Open
// Kernel Module for x86_64  580.159.04  Release Build ..."): the first word made of digits and dots.
std::string driver_release() {
    std::ifstream in("/proc/driver/nvidia/version");
    std::string line, word;
    std::getline(in, line);
    std::istringstream words(line);
    while (words >> word)
        if (word.find('.') != std::string::npos && word.find_first_not_of("0123456789.") == std::string::npos) return word;
    return "unknown";
}

// The file a symbol was loaded from: which library build actually ran.
std::string library_path(const void* symbol) {
    Dl_info info{};
    return dladdr(symbol, &info) && info.dli_fname ? info.dli_fname : "unknown";
}

std::string version_string(int encoded) {  // CUDA's 1000 * major + 10 * minor
    return cat(encoded / 1000, ".", (encoded % 1000) / 10);
}

}  // namespace

bool cuda_device_available() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

DensePlan::~DensePlan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
}

#ifdef SPENSE_HAS_CUSPARSELT
SparsePlan::~SparsePlan() {
    if (built >= 6) cusparseLtMatmulPlanDestroy(&plan);
    if (built >= 5) cusparseLtMatmulAlgSelectionDestroy(&selection);
    if (built >= 3) cusparseLtMatDescriptorDestroy(&c);
    if (built >= 2) cusparseLtMatDescriptorDestroy(&b);
    if (built >= 1) cusparseLtMatDescriptorDestroy(&a);
}
#endif

GpuContext::GpuContext() : caches_(std::make_unique<PlanCaches>()) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        fail("no CUDA device (", e == cudaSuccess ? "none found" : detail::cuda_status(e), "): the GPU operators need one");
    int device = 0;
    SPENSE_CUDA_CHECK(cudaGetDevice(&device));
    SPENSE_CUDA_CHECK(cudaGetDeviceProperties(&props_, device), "device ", device);
    SPENSE_CUBLAS_CHECK(cublasLtCreate(&cublaslt_));
#ifdef SPENSE_HAS_CUSPARSELT
    cusparselt_.reset(new uint8_t[sizeof(cusparseLtHandle_t)]);
    SPENSE_CUSPARSELT_CHECK(cusparseLtInit(reinterpret_cast<cusparseLtHandle_t*>(cusparselt_.get())));
#endif
    SPENSE_CUDA_CHECK(cudaEventCreate(&start_));
    SPENSE_CUDA_CHECK(cudaEventCreate(&stop_));
    SPENSE_CUDA_CHECK(cudaEventCreateWithFlags(&forked_, cudaEventDisableTiming));
    SPENSE_CUDA_CHECK(cudaEventCreateWithFlags(&joined_, cudaEventDisableTiming));
    SPENSE_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), "side stream");
}

GpuContext::~GpuContext() {
    cudaDeviceSynchronize();
    caches_.reset();  // plans before the handles they were made with
    workspaces_.clear();
    if (side_) cudaStreamDestroy(side_);
    for (cudaEvent_t e : {start_, stop_, forked_, joined_})
        if (e) cudaEventDestroy(e);
#ifdef SPENSE_HAS_CUSPARSELT
    if (cusparselt_) cusparseLtDestroy(reinterpret_cast<const cusparseLtHandle_t*>(cusparselt_.get()));
#endif
    if (cublaslt_) cublasLtDestroy(cublaslt_);
}

void* GpuContext::workspace(size_t bytes, cudaStream_t stream) {
    DeviceBuffer& w = workspaces_[stream];
    if (w.bytes() < bytes) {
        SPENSE_CUDA_CHECK(cudaDeviceSynchronize(), "before growing the GEMM workspace");
        w = DeviceBuffer();
        w = DeviceBuffer(bytes, "GEMM workspace");
    }
    return w.get();
}

cudaStream_t GpuContext::fork(cudaStream_t stream) {
    SPENSE_CUDA_CHECK(cudaEventRecord(forked_, stream), "fork");
    SPENSE_CUDA_CHECK(cudaStreamWaitEvent(side_, forked_), "fork");
    return side_;
}

void GpuContext::join(cudaStream_t stream) {
    SPENSE_CUDA_CHECK(cudaEventRecord(joined_, side_), "join");
    SPENSE_CUDA_CHECK(cudaStreamWaitEvent(stream, joined_), "join");
}

void* GpuContext::search_scratch(size_t bytes) {
    if (scratch_.bytes() < bytes) {
        SPENSE_CUDA_CHECK(cudaDeviceSynchronize(), "before growing the search scratch");
        scratch_ = DeviceBuffer();
        scratch_ = DeviceBuffer(bytes, "algorithm search scratch");
    }
    return scratch_.get();
}

double GpuContext::time_ms(const std::function<void()>& fn, cudaStream_t stream) { return time_ms(std::vector{fn}, stream).front(); }

std::vector<double> GpuContext::time_ms(const std::vector<std::function<void()>>& fns, cudaStream_t stream) {
    constexpr int kRounds = 7;
    if (l2_flush_.bytes() == 0) {
        l2_flush_ = DeviceBuffer(2 * size_t(props_.l2CacheSize), "L2 eviction buffer of the algorithm searches");
        l2_sink_ = DeviceBuffer(sizeof(float), "L2 eviction sink");
        SPENSE_CUDA_CHECK(cudaMemsetAsync(l2_flush_.get(), 1, l2_flush_.bytes(), stream), "L2 eviction buffer");
    }
    for (const auto& fn : fns) fn();
    std::vector<std::vector<float>> ms(fns.size(), std::vector<float>(kRounds));
    for (int round = 0; round < kRounds; ++round)
        for (size_t i = 0; i < fns.size(); ++i) {
            launch_read_buffer(l2_flush_.get(), l2_flush_.bytes(), l2_sink_.as<float>(), stream);
            SPENSE_CUDA_CHECK(cudaEventRecord(start_, stream));
            fns[i]();
            SPENSE_CUDA_CHECK(cudaEventRecord(stop_, stream));
            SPENSE_CUDA_CHECK(cudaEventSynchronize(stop_));
            SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms[i][size_t(round)], start_, stop_));
        }
    std::vector<double> medians;
    for (auto& m : ms) {
        std::nth_element(m.begin(), m.begin() + kRounds / 2, m.end());
        medians.push_back(double(m[kRounds / 2]));
    }
    return medians;
}

nlohmann::json GpuContext::describe() const {
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    const size_t lt = cublasLtGetVersion();  // major * 10000 + minor * 100 + patch
    nlohmann::json j = {
        {"gpu", props_.name},
        {"compute_capability", cat(props_.major, ".", props_.minor)},
        {"sms", props_.multiProcessorCount},
        {"l2_bytes", props_.l2CacheSize},
        {"memory_bytes", props_.totalGlobalMem},
        {"driver", driver_release()},
        {"driver_cuda", version_string(driver)},
        {"cuda_runtime", version_string(runtime)},
        {"cublaslt", cat(lt / 10000, ".", (lt / 100) % 100, ".", lt % 100)},
        {"cublaslt_path", library_path(reinterpret_cast<const void*>(&cublasLtCreate))},
    };
#ifdef SPENSE_HAS_CUSPARSELT
    int major = 0, minor = 0, patch = 0;
    cusparseLtGetProperty(MAJOR_VERSION, &major);
    cusparseLtGetProperty(MINOR_VERSION, &minor);
    cusparseLtGetProperty(PATCH_LEVEL, &patch);
    j["cusparselt"] = cat(major, ".", minor, ".", patch);
    j["cusparselt_path"] = library_path(reinterpret_cast<const void*>(&cusparseLtInit));
#else
    j["cusparselt"] = "not built";
#endif
    return j;
}

nlohmann::json GpuContext::plan_report() const {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [key, c] : caches_->dense_choices)
        out.push_back({{"backend", "cublaslt"}, {"shape", key.first.describe()}, {"bucket", key.second}, {"ms", c.algo().ms},
                       {"candidates", c.timed.size()}, {"heuristic_rank", c.algo().rank}, {"fastest_alone", c.chosen == 0}});
    for (const auto& [key, c] : caches_->native_choices)
        out.push_back({{"backend", "native"}, {"shape", key.first.describe()}, {"bucket", key.second}, {"ms", c.ms},
                       {"candidates", c.candidates}, {"kernel", native_kernel_name(c.config.kernel)}, {"split_k", c.config.splits},
                       {"k_parts", c.config.k_parts()}});
    for (const auto& [key, c] : caches_->sparse_backends)
        out.push_back({{"backend", "2:4 selection"}, {"shape", key.first.describe()}, {"bucket", key.second},
                       {"chosen", c.backend == SparseBackend::Native ? "native" : "cusparselt"}, {"native_ms", c.native_ms},
                       {"cusparselt_ms", c.cusparselt_ms}});
    for (const auto& [key, c] : caches_->mlp_backends) {
        nlohmann::json times = nlohmann::json::object();
        for (const MlpBackendPair& p : c.pairs)
            if (p.ms >= 0) times[backend_pair_name(p.gate_up, p.down)] = p.ms;
        out.push_back({{"backend", "Spense MLP plan"},
                       {"shape", cat(gemm_dtype_name(key.dtype), " hidden=", key.hidden, " sparse=", key.sparse_padded, " dense=",
                                     key.dense_padded, key.dynamic_scales ? " dynamic" : " static", " scales")},
                       {"bucket", key.bucket},
                       {"gate_up", sparse_backend_name(c.pairs.front().gate_up)},
                       {"down", sparse_backend_name(c.pairs.front().down)},
                       {"candidates_ms", times}});
    }
    // Which built plans take programmatic edges in a captured graph (library_pdl.h).
    for (const auto& [key, p] : caches_->dense_plans)
        out.push_back({{"backend", "cublaslt plan"}, {"shape", key.first.describe()}, {"n", key.second}, {"programmatic", p->programmatic}});
#ifdef SPENSE_HAS_CUSPARSELT
    for (const auto& [key, p] : caches_->sparse_plans)
        out.push_back({{"backend", "cusparselt plan"}, {"shape", key.first.describe()}, {"n", key.second}, {"programmatic", p->programmatic}});
    for (const auto& [key, c] : caches_->sparse_choices)
        out.push_back({{"backend", "cusparselt"}, {"shape", key.first.describe()}, {"bucket", key.second}, {"ms", c.ms},
                       {"candidates", c.candidates}, {"refused", c.refused}, {"alg_id", c.alg_id}, {"split_k", c.split_k},
                       {"split_k_mode", c.split_k_mode}});
#endif
    return out;
}

}  // namespace spense::gpu
