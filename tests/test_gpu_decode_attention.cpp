// Flash-decoding attention (src/gpu/decode_attention.h) against a plain CPU reference in double:
// head dims 8 to 256, groups of 1, 2, 3, 8 and 20 heads, batches 1 to 32, per-sequence lengths
// including 1, max_ctx and values off the chunk grid, sliding windows, forced small chunks; BF16
// output within 1e-2 and FP8 output (decoded with its row scale) within e4m3's rounding of each
// head's largest value. Cache positions the kernel must not read (past len, before the window) hold
// NaN, and outputs are NaN-poisoned first, so a stray read or a missed write shows. One test replays
// a captured CUDA graph with new lengths. GPU tests skip themselves where no CUDA device is present.
#include <gtest/gtest.h>

#ifdef SPENSE_HAS_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/decode_attention.h"
#include "gpu/device_buffer.h"
#include "test_gpu_reference.h"

namespace spense {
namespace {

using gpu::DecodeAttention;
using gpu::DecodeAttentionShape;
using gpu::DeviceBuffer;

#define REQUIRE_GPU()                                                          \
    do {                                                                       \
        if (!gpu::cuda_device_available()) GTEST_SKIP() << "no CUDA device";   \
    } while (0)

constexpr uint16_t kBf16NaN = 0x7fc0;

cudaDeviceProp device_props() {
    int dev = 0;
    SPENSE_CUDA_CHECK(cudaGetDevice(&dev));
    cudaDeviceProp props{};
    SPENSE_CUDA_CHECK(cudaGetDeviceProperties(&props, dev));
    return props;
}

// The keys of a sequence of length len: [lo, len).
int64_t window_start(int64_t len, int64_t window) { return window > 0 ? std::max<int64_t>(0, len - window) : 0; }

// Random BF16 +-U(lo, hi): no accidental zeros.
std::vector<uint16_t> random_bf16(size_t count, float lo, float hi, std::mt19937_64& rng) {
    std::uniform_real_distribution<float> mag(lo, hi);
    std::vector<uint16_t> out(count);
    for (auto& v : out) v = f32_to_bf16((rng() & 1) ? mag(rng) : -mag(rng));
    return out;
}

// q [batch, H, hd] and the caches [batch, KV, max_ctx, hd]; cache positions that none of the
// length sets makes a key are NaN.
struct Inputs {
    DecodeAttentionShape shape;
    std::vector<uint16_t> q, k, v;
};

Inputs make_inputs(const DecodeAttentionShape& s, const std::vector<std::vector<int32_t>>& length_sets, uint64_t seed) {
    std::mt19937_64 rng(seed);
    Inputs in{s, random_bf16(size_t(s.batch * s.n_heads * s.head_dim), 0.1f, 3.0f, rng),
              random_bf16(size_t(s.batch * s.n_kv_heads * s.max_ctx * s.head_dim), 0.1f, 1.0f, rng),
              random_bf16(size_t(s.batch * s.n_kv_heads * s.max_ctx * s.head_dim), 0.1f, 1.0f, rng)};
    for (int64_t b = 0; b < s.batch; ++b) {
        int64_t lo = s.max_ctx, hi = 0;
        for (const auto& lengths : length_sets) {
            lo = std::min(lo, window_start(lengths[size_t(b)], s.window));
            hi = std::max<int64_t>(hi, lengths[size_t(b)]);
        }
        for (int64_t kv = 0; kv < s.n_kv_heads; ++kv)
            for (int64_t j = 0; j < s.max_ctx; ++j)
                if (j < lo || j >= hi)
                    for (int64_t d = 0; d < s.head_dim; ++d) {
                        const size_t i = size_t(((b * s.n_kv_heads + kv) * s.max_ctx + j) * s.head_dim + d);
                        in.k[i] = in.v[i] = kBf16NaN;
                    }
    }
    return in;
}

// o [batch, H * hd] from the header's formula, in double on the BF16 inputs.
std::vector<double> reference(const Inputs& in, const std::vector<int32_t>& lengths) {
    const DecodeAttentionShape& s = in.shape;
    const int64_t hd = s.head_dim, group = s.n_heads / s.n_kv_heads;
    std::vector<double> out(size_t(s.batch * s.n_heads * hd));
    for (int64_t b = 0; b < s.batch; ++b)
        for (int64_t h = 0; h < s.n_heads; ++h) {
            const int64_t kv = h / group, len = lengths[size_t(b)], lo = window_start(len, s.window);
            const auto at = [&](const std::vector<uint16_t>& c, int64_t j, int64_t d) {
                return double(bf16_to_f32(c[size_t(((b * s.n_kv_heads + kv) * s.max_ctx + j) * hd + d)]));
            };
            std::vector<double> score(size_t(len - lo));
            double mx = -INFINITY;
            for (int64_t j = lo; j < len; ++j) {
                double dot = 0;
                for (int64_t d = 0; d < hd; ++d) dot += double(bf16_to_f32(in.q[size_t((b * s.n_heads + h) * hd + d)])) * at(in.k, j, d);
                score[size_t(j - lo)] = dot / std::sqrt(double(hd));
                mx = std::max(mx, score[size_t(j - lo)]);
            }
            double sum = 0;
            for (double& p : score) sum += (p = std::exp(p - mx));
            for (int64_t d = 0; d < hd; ++d) {
                double o = 0;
                for (int64_t j = lo; j < len; ++j) o += score[size_t(j - lo)] * at(in.v, j, d);
                out[size_t((b * s.n_heads + h) * hd + d)] = o / sum;
            }
        }
    return out;
}

DeviceBuffer poisoned(size_t bytes) {  // 0xff bytes: NaN in BF16 and in E4M3
    DeviceBuffer b(bytes, "test buffer");
    SPENSE_CUDA_CHECK(cudaMemset(b.get(), 0xff, bytes));
    return b;
}

DeviceBuffer uploaded(const void* data, size_t bytes) {
    DeviceBuffer b(bytes, "test input");
    b.upload(data, bytes);
    return b;
}

// The device side of one problem: inputs, lengths, both outputs, the workspace.
struct DeviceProblem {
    DeviceProblem(const DecodeAttention& attn, const Inputs& in)
        : q(uploaded(in.q.data(), in.q.size() * 2)),
          k(uploaded(in.k.data(), in.k.size() * 2)),
          v(uploaded(in.v.data(), in.v.size() * 2)),
          lengths(size_t(in.shape.batch) * sizeof(int32_t), "test lengths"),
          values(poisoned(size_t(in.shape.batch * in.shape.n_heads * in.shape.head_dim) * 2)),
          fp8(poisoned(size_t(in.shape.batch * in.shape.n_heads * in.shape.head_dim))),
          scales(poisoned(size_t(in.shape.batch) * sizeof(float))),
          workspace(attn.workspace_bytes(), "test workspace") {}

    void set_lengths(const std::vector<int32_t>& l, cudaStream_t stream) {
        SPENSE_CUDA_CHECK(cudaMemcpyAsync(lengths.get(), l.data(), l.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
        SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    void run(const DecodeAttention& attn, bool fp8_out, cudaStream_t stream) const {
        DecodeAttention::Output out;
        if (fp8_out) {
            out.fp8 = fp8.as<uint8_t>();
            out.row_scale = scales.as<float>();
        } else {
            out.values = values.as<gpu::bf16>();
        }
        attn.run(q.as<gpu::bf16>(), k.as<gpu::bf16>(), v.as<gpu::bf16>(), lengths.as<int32_t>(), out, workspace.get(), stream);
    }

    DeviceBuffer q, k, v, lengths, values, fp8, scales, workspace;
};

// Every head's output within `tol` times that head's largest reference magnitude.
void expect_close(const std::vector<float>& got, const std::vector<double>& ref, const DecodeAttentionShape& s, double tol,
                  const std::string& what) {
    const int64_t hd = s.head_dim;
    int bad = 0;
    for (int64_t row = 0; row < s.batch * s.n_heads; ++row) {
        double amax = 0, err = 0;
        for (int64_t d = 0; d < hd; ++d) {
            const size_t i = size_t(row * hd + d);
            amax = std::max(amax, std::fabs(ref[i]));
            err = std::isfinite(got[i]) ? std::max(err, std::fabs(double(got[i]) - ref[i])) : INFINITY;
        }
        if (!(err <= tol * amax) && bad++ < 5)
            ADD_FAILURE() << what << ": sequence " << row / s.n_heads << " head " << row % s.n_heads << ": max error " << err
                          << " against max |o| " << amax;
    }
    EXPECT_EQ(bad, 0) << what << ": heads off the reference";
}

std::vector<float> download_bf16(const DeviceBuffer& b, size_t count) {
    std::vector<uint16_t> bits(count);
    b.download(bits.data(), count * 2);
    std::vector<float> out(count);
    for (size_t i = 0; i < count; ++i) out[i] = bf16_to_f32(bits[i]);
    return out;
}

// FP8 codes decoded with their row scales; the scales checked against the reference row amax.
std::vector<float> download_fp8(const DeviceProblem& p, const std::vector<double>& ref, const DecodeAttentionShape& s, const std::string& what) {
    const int64_t width = s.n_heads * s.head_dim;
    std::vector<uint8_t> codes(size_t(s.batch * width));
    std::vector<float> scales(static_cast<size_t>(s.batch));
    p.fp8.download(codes.data(), codes.size());
    p.scales.download(scales.data(), scales.size() * sizeof(float));
    std::vector<float> out(codes.size());
    for (int64_t b = 0; b < s.batch; ++b) {
        double amax = 0;
        for (int64_t i = 0; i < width; ++i) amax = std::max(amax, std::fabs(ref[size_t(b * width + i)]));
        EXPECT_NEAR(scales[size_t(b)], amax / 448.0, 1e-2 * amax / 448.0) << what << ": row scale of sequence " << b;
        for (int64_t i = 0; i < width; ++i) out[size_t(b * width + i)] = test::e4m3_decode(codes[size_t(b * width + i)]) * scales[size_t(b)];
    }
    return out;
}

// BF16 and FP8 outputs of one problem against the reference.
void check_problem(const DecodeAttentionShape& shape, const std::vector<int32_t>& lengths, uint64_t seed) {
    const std::string what = cat("batch ", shape.batch, ", ", shape.n_heads, "/", shape.n_kv_heads, " heads of ", shape.head_dim, ", context ",
                                 shape.max_ctx, ", window ", shape.window, ", chunk ", shape.chunk);
    ASSERT_EQ(int64_t(lengths.size()), shape.batch);
    const DecodeAttention attn(shape, device_props());
    const Inputs in = make_inputs(shape, {lengths}, seed);
    const std::vector<double> ref = reference(in, lengths);
    DeviceProblem p(attn, in);
    p.set_lengths(lengths, nullptr);
    p.run(attn, false, nullptr);
    p.run(attn, true, nullptr);
    SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
    const size_t count = size_t(shape.batch * shape.n_heads * shape.head_dim);
    const std::string where = cat(what, " (", attn.splits(), " chunks of ", attn.chunk(), ")");
    expect_close(download_bf16(p.values, count), ref, shape, 1e-2, where + ", BF16");
    // E4M3 keeps 3 mantissa bits: rounding moves a value by at most 1/16 of it (by 2^-10 s below
    // the normal range), so each head stays within 1/16 of its largest value, plus the BF16 error.
    expect_close(download_fp8(p, ref, shape, where), ref, shape, 0.07, where + ", FP8");
}

// Lengths 1, max_ctx, and pseudo-random ones in between.
std::vector<int32_t> mixed_lengths(int64_t batch, int64_t max_ctx, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> out(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b)
        out[size_t(b)] = b == 0 ? 1 : b == 1 ? int32_t(max_ctx) : int32_t(1 + rng() % uint64_t(max_ctx));
    return out;
}

TEST(GpuDecodeAttention, HeadDim8SingleHeadGroups) {
    REQUIRE_GPU();
    check_problem({5, 4, 4, 8, 300}, {1, 300, 77, 129, 200}, 1);
}

TEST(GpuDecodeAttention, HeadDim64GroupsOf3) {
    REQUIRE_GPU();
    check_problem({5, 9, 3, 64, 1000}, {1, 1000, 513, 64, 65}, 2);
}

TEST(GpuDecodeAttention, HeadDim128GroupsOf8Batch32) {
    REQUIRE_GPU();
    check_problem({32, 16, 2, 128, 1500}, mixed_lengths(32, 1500, 3), 3);
}

TEST(GpuDecodeAttention, OtherHeadDims) {
    REQUIRE_GPU();
    check_problem({3, 8, 2, 16, 257}, {257, 1, 130}, 4);
    check_problem({2, 6, 3, 32, 190}, {189, 64}, 5);
    check_problem({2, 2, 1, 256, 400}, {1, 399}, 6);
}

TEST(GpuDecodeAttention, GroupsOfMoreThan16Heads) {
    REQUIRE_GPU();
    check_problem({3, 40, 2, 32, 333}, {333, 1, 100}, 7);
}

TEST(GpuDecodeAttention, ManySmallChunks) {
    REQUIRE_GPU();
    DecodeAttentionShape s{4, 16, 8, 64, 1100};
    s.chunk = 64;
    check_problem(s, {1100, 1, 63, 640}, 8);
    s.chunk = 192;
    check_problem(s, {1100, 193, 191, 577}, 9);
}

TEST(GpuDecodeAttention, SlidingWindow) {
    REQUIRE_GPU();
    DecodeAttentionShape s{5, 6, 2, 64, 700};
    s.window = 100;
    check_problem(s, {1, 50, 100, 101, 700}, 10);
    s.chunk = 64;  // windows straddling several chunks, starting inside one
    check_problem(s, {1, 150, 333, 640, 700}, 11);
    s.window = 1;
    check_problem(s, {1, 2, 65, 640, 700}, 12);
}

// The engine captures the decode step once and replays it with new lengths: the same graph must
// give each step's answer.
TEST(GpuDecodeAttention, GraphReplayWithNewLengths) {
    REQUIRE_GPU();
    const DecodeAttentionShape s{6, 12, 4, 128, 2000};
    const std::vector<std::vector<int32_t>> steps = {{1, 2000, 700, 1025, 3, 64}, {2, 1999, 1500, 1, 900, 65}, {1, 2000, 700, 1025, 3, 64}};
    const DecodeAttention attn(s, device_props());
    const Inputs in = make_inputs(s, steps, 13);
    DeviceProblem p(attn, in);
    cudaStream_t stream = nullptr;
    SPENSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    SPENSE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    p.run(attn, false, stream);
    p.run(attn, true, stream);
    SPENSE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    SPENSE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    const size_t count = size_t(s.batch * s.n_heads * s.head_dim);
    for (size_t step = 0; step < steps.size(); ++step) {
        p.set_lengths(steps[step], stream);
        SPENSE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
        SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream));
        const std::vector<double> ref = reference(in, steps[step]);
        const std::string what = cat("graph replay, step ", step);
        expect_close(download_bf16(p.values, count), ref, s, 1e-2, what + ", BF16");
        expect_close(download_fp8(p, ref, s, what), ref, s, 0.07, what + ", FP8");
    }
    SPENSE_CUDA_CHECK(cudaGraphExecDestroy(exec));
    SPENSE_CUDA_CHECK(cudaGraphDestroy(graph));
    SPENSE_CUDA_CHECK(cudaStreamDestroy(stream));
}

// Shapes are checked before any CUDA call, so this runs without a device too.
TEST(GpuDecodeAttention, RejectsBadShapes) {
    const cudaDeviceProp props{};
    const auto expect_error = [&](const DecodeAttentionShape& s, const std::string& needle) {
        try {
            DecodeAttention attn(s, props);
            ADD_FAILURE() << "no error for a shape that should fail with '" << needle << "'";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect_error({2, 12, 5, 64, 100}, "n_heads must be a positive multiple of n_kv_heads");
    expect_error({2, 8, 0, 64, 100}, "n_heads must be a positive multiple of n_kv_heads");
    expect_error({2, 8, 2, 48, 100}, "head_dim must be 8, 16, 32, 64, 128 or 256");
    expect_error({2, 8, 2, 512, 100}, "head_dim must be 8, 16, 32, 64, 128 or 256");
    expect_error({2, 8, 2, 64, 0}, "max_ctx must be >= 1");
    expect_error({2, 8, 2, 64, -5}, "max_ctx must be >= 1");
    expect_error({0, 8, 2, 64, 100}, "batch must lie in [1, 65535]");
    expect_error({2, 8, 2, 64, 100, -1}, "window must be >= 0");
    expect_error({2, 8, 2, 64, 100, 0, 100}, "must be a multiple of 64");
}

}  // namespace
}  // namespace spense

#endif  // SPENSE_HAS_CUDA
