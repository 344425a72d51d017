// A CUPTI injection library that writes every kernel's start, duration and name to a CSV, kernels
// of replayed CUDA graphs included, and every memset and memcpy as "[CUDA memset N bytes]" or
// "[CUDA memcpy N bytes]" (the libraries capture memsets into graphs): the timeline of a decode
// step on a machine without Nsight Systems (the GPU machine has Nsight Compute only). Built as
// build/libkernel_trace.so where CUDA and CUPTI are found; the CUDA driver loads it into any program:
//
//   CUDA_INJECTION64_PATH=$PWD/build/libkernel_trace.so KERNEL_TRACE_CSV=trace.csv spense bench decode ...
//
// The CSV has the column names of `nsys stats --report cuda_gpu_trace` ("Start (ns)", "Duration
// (ns)", "Name"), rows in the order CUPTI delivers them; bench/tools/step_timeline.py reads it
// (its kernels; it leaves out the "[CUDA" rows, as it does those of nsys).
// Tracing costs the decode step about 1% (Qwen3-32B at batch 32 on the H200).
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <cupti.h>

namespace {

FILE* out = nullptr;
std::string out_path;  // written as out_path + ".tmp", renamed at exit: a crashed run leaves no CSV that looks whole
constexpr size_t kBufferBytes = 8 << 20;

void check(CUptiResult r, const char* what) {
    if (r == CUPTI_SUCCESS) return;
    const char* msg = nullptr;
    cuptiGetResultString(r, &msg);
    std::fprintf(stderr, "kernel_trace: %s: %s\n", what, msg ? msg : "unknown CUPTI error");
    std::exit(1);
}

std::string demangled(const char* name) {
    int status = 0;
    char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    std::string s = status == 0 && d ? d : name;
    std::free(d);
    for (char& c : s)
        if (c == '"' || c == ',') c = ' ';  // the name is one CSV field
    return s;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
    *size = kBufferBytes;
    *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    CUpti_Activity* record = nullptr;
    while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
        if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) {
            const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
            std::fprintf(out, "%llu,%llu,\"%s\"\n", (unsigned long long)k->start, (unsigned long long)(k->end - k->start),
                         demangled(k->name).c_str());
        } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
            const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
            std::fprintf(out, "%llu,%llu,\"[CUDA memset %llu bytes]\"\n", (unsigned long long)m->start, (unsigned long long)(m->end - m->start),
                         (unsigned long long)m->bytes);
        } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
            std::fprintf(out, "%llu,%llu,\"[CUDA memcpy %llu bytes]\"\n", (unsigned long long)m->start, (unsigned long long)(m->end - m->start),
                         (unsigned long long)m->bytes);
        }
    }
    size_t dropped = 0;
    cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
    if (dropped) std::fprintf(stderr, "kernel_trace: %zu records dropped\n", dropped);
    std::free(buffer);
}

void flush_at_exit() {
    cuptiActivityFlushAll(1);
    if (std::fclose(out) != 0 || std::rename((out_path + ".tmp").c_str(), out_path.c_str()) != 0)
        std::perror(("kernel_trace: writing " + out_path).c_str());
}

}  // namespace

extern "C" int InitializeInjection() {
    const char* path = std::getenv("KERNEL_TRACE_CSV");
    out_path = path ? path : "kernel_trace.csv";
    out = std::fopen((out_path + ".tmp").c_str(), "w");
    if (!out) {
        std::perror(("kernel_trace: opening " + out_path + ".tmp").c_str());
        std::exit(1);
    }
    std::fprintf(out, "Start (ns),Duration (ns),Name\n");
    check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "registering buffers");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enabling kernel records");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "enabling memset records");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "enabling memcpy records");
    std::atexit(flush_at_exit);
    return 1;
}
