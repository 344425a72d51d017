// The decode attention kernel (src/gpu/decode_attention.h) against a plain CPU reference in
// double: head dims 8 to 256, groups of 1, 2, 3, 8 and 20 heads, batches 1 to 32, per-sequence
// lengths including 1, max_ctx and values off the chunk grid, sliding windows, forced small chunks;
// BF16 output within 1e-2 and FP8 output (decoded with its row scale) within e4m3's rounding of
// each head's largest value. The new token's q, k, v come from a q|k|v GEMM output (raw BF16, or
// with FP8 row and column scales and a bias), through the q/k norms and RoPE in one test; the
// caches must afterwards hold the new key and value at len - 1 and be unchanged elsewhere. Cache
// positions the kernel must not read (past len, before the window, the new token's before it is
// appended) hold NaN, and outputs are NaN-poisoned first, so a stray read or a missed write shows.
// One test replays a captured CUDA graph with new lengths. GPU tests skip themselves where no CUDA
// device is present; the automatic chunk choice is host code and runs everywhere.
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
#include "test_gpu.h"
#include "test_gpu_reference.h"

namespace spense {
namespace {

using gpu::DecodeAttention;
using gpu::DecodeAttentionShape;
using gpu::DeviceBuffer;

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

// What turns the new token's GEMM output into heads (DecodeAttention::Input), host side; an empty
// vector: none.
struct Transforms {
    std::vector<float> row_scale, col_scale, bias, q_norm, k_norm;
    std::vector<float> rope;  // [max_ctx, hd / 2] (cos, sin) pairs
    float eps = 1e-6f;
};

int64_t qkv_width(const DecodeAttentionShape& s) { return (s.n_heads + 2 * s.n_kv_heads) * s.head_dim; }

// qkv [batch, (H + 2 KV) hd], the caches [batch, KV, max_ctx, hd] and the V bounds [batch, KV]
// (the host copies follow the kernel's appends: append()). Cache positions that none of the length
// sets makes a key are NaN, and so are the new token's positions of the first set; the bounds
// start as the largest |v| of the other positions.
struct Inputs {
    DecodeAttentionShape shape;
    std::vector<uint16_t> qkv, k, v;
    Transforms tf;
    std::vector<float> v_bound;
};

Inputs make_inputs(const DecodeAttentionShape& s, const std::vector<std::vector<int32_t>>& length_sets, uint64_t seed,
                   const Transforms& tf = {}) {
    std::mt19937_64 rng(seed);
    const int64_t hd = s.head_dim, width = qkv_width(s), cache = s.batch * s.n_kv_heads * s.max_ctx * hd;
    Inputs in{s, {}, random_bf16(size_t(cache), 0.1f, 1.0f, rng), random_bf16(size_t(cache), 0.1f, 1.0f, rng), tf,
              std::vector<float>(size_t(s.batch * s.n_kv_heads), 0.0f)};
    for (int64_t b = 0; b < s.batch; ++b) {  // q as the queries of the earlier tests, k and v as the cache
        const std::vector<uint16_t> q = random_bf16(size_t(s.n_heads * hd), 0.1f, 3.0f, rng);
        const std::vector<uint16_t> kv = random_bf16(size_t(width - s.n_heads * hd), 0.1f, 1.0f, rng);
        in.qkv.insert(in.qkv.end(), q.begin(), q.end());
        in.qkv.insert(in.qkv.end(), kv.begin(), kv.end());
    }
    for (int64_t b = 0; b < s.batch; ++b) {
        int64_t lo = s.max_ctx, hi = 0;
        for (const auto& lengths : length_sets) {
            lo = std::min(lo, window_start(lengths[size_t(b)], s.window));
            hi = std::max<int64_t>(hi, lengths[size_t(b)]);
        }
        const int64_t fresh = length_sets[0][size_t(b)] - 1;
        for (int64_t kv = 0; kv < s.n_kv_heads; ++kv)
            for (int64_t j = 0; j < s.max_ctx; ++j)
                if (j < lo || j >= hi || j == fresh)
                    for (int64_t d = 0; d < hd; ++d) {
                        const size_t i = size_t(((b * s.n_kv_heads + kv) * s.max_ctx + j) * hd + d);
                        in.k[i] = in.v[i] = kBf16NaN;
                    }
    }
    for (size_t i = 0; i < in.v.size(); ++i) {
        const float v = bf16_to_f32(in.v[i]);
        float& bound = in.v_bound[i / size_t(s.max_ctx * hd)];
        if (std::isfinite(v)) bound = std::max(bound, std::fabs(v));
    }
    return in;
}

// Head `head` of sequence b's GEMM output as the header defines it, at position pos, rounded to
// BF16: Y = raw (* row scale * column scale + bias), then the norm and RoPE when given.
std::vector<uint16_t> head_bf16(const Inputs& in, int64_t b, int64_t head, const std::vector<float>& norm, bool rotate, int64_t pos) {
    const DecodeAttentionShape& s = in.shape;
    const Transforms& tf = in.tf;
    const int64_t hd = s.head_dim, half = hd / 2, width = qkv_width(s);
    std::vector<double> x(static_cast<size_t>(hd));
    for (int64_t d = 0; d < hd; ++d) {
        const int64_t j = head * hd + d;
        double val = bf16_to_f32(in.qkv[size_t(b * width + j)]);
        if (!tf.row_scale.empty()) val *= tf.row_scale[size_t(b)];
        if (!tf.col_scale.empty()) val *= tf.col_scale[size_t(j)];
        if (!tf.bias.empty()) val += tf.bias[size_t(j)];
        x[size_t(d)] = val;
    }
    if (!norm.empty()) {
        double ss = 0;
        for (double v : x) ss += v * v;
        const double inv = 1.0 / std::sqrt(ss / double(hd) + tf.eps);
        for (int64_t d = 0; d < hd; ++d) x[size_t(d)] *= inv * norm[size_t(d)];
    }
    if (rotate && !tf.rope.empty())
        for (int64_t i = 0; i < half; ++i) {
            const double c = tf.rope[size_t(2 * (pos * half + i))], sn = tf.rope[size_t(2 * (pos * half + i) + 1)];
            const double a = x[size_t(i)], e = x[size_t(i + half)];
            x[size_t(i)] = a * c - e * sn;
            x[size_t(i + half)] = e * c + a * sn;
        }
    std::vector<uint16_t> out(static_cast<size_t>(hd));
    for (int64_t d = 0; d < hd; ++d) out[size_t(d)] = f32_to_bf16(float(x[size_t(d)]));
    return out;
}

// The step's appends applied to the host caches: each sequence's new key and value at len - 1.
void append(Inputs& in, const std::vector<int32_t>& lengths) {
    const DecodeAttentionShape& s = in.shape;
    for (int64_t b = 0; b < s.batch; ++b)
        for (int64_t kv = 0; kv < s.n_kv_heads; ++kv) {
            const int64_t pos = lengths[size_t(b)] - 1;
            const size_t at = size_t(((b * s.n_kv_heads + kv) * s.max_ctx + pos) * s.head_dim);
            const std::vector<uint16_t> k = head_bf16(in, b, s.n_heads + kv, in.tf.k_norm, true, pos);
            const std::vector<uint16_t> v = head_bf16(in, b, s.n_heads + s.n_kv_heads + kv, {}, false, pos);
            std::copy(k.begin(), k.end(), in.k.begin() + std::ptrdiff_t(at));
            std::copy(v.begin(), v.end(), in.v.begin() + std::ptrdiff_t(at));
            for (uint16_t bits : v) in.v_bound[size_t(b * s.n_kv_heads + kv)] = std::max(in.v_bound[size_t(b * s.n_kv_heads + kv)], std::fabs(bf16_to_f32(bits)));
        }
}

// o [batch, H * hd] from the header's formula, in double on the BF16 heads and the (appended) caches.
std::vector<double> reference(const Inputs& in, const std::vector<int32_t>& lengths) {
    const DecodeAttentionShape& s = in.shape;
    const int64_t hd = s.head_dim, group = s.n_heads / s.n_kv_heads;
    std::vector<double> out(size_t(s.batch * s.n_heads * hd));
    for (int64_t b = 0; b < s.batch; ++b)
        for (int64_t h = 0; h < s.n_heads; ++h) {
            const int64_t kv = h / group, len = lengths[size_t(b)], lo = window_start(len, s.window);
            const std::vector<uint16_t> q = head_bf16(in, b, h, in.tf.q_norm, true, len - 1);
            const auto at = [&](const std::vector<uint16_t>& c, int64_t j, int64_t d) {
                return double(bf16_to_f32(c[size_t(((b * s.n_kv_heads + kv) * s.max_ctx + j) * hd + d)]));
            };
            std::vector<double> score(size_t(len - lo));
            double mx = -INFINITY;
            for (int64_t j = lo; j < len; ++j) {
                double dot = 0;
                for (int64_t d = 0; d < hd; ++d) dot += double(bf16_to_f32(q[size_t(d)])) * at(in.k, j, d);
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

DeviceBuffer floats(const std::vector<float>& v) {
    return v.empty() ? DeviceBuffer() : uploaded(v.data(), v.size() * sizeof(float));
}

// The device side of one problem: inputs, lengths, both outputs, the workspace (zeroed once).
struct DeviceProblem {
    DeviceProblem(const DecodeAttention& attn, const Inputs& in)
        : qkv(uploaded(in.qkv.data(), in.qkv.size() * 2)),
          k(uploaded(in.k.data(), in.k.size() * 2)),
          v(uploaded(in.v.data(), in.v.size() * 2)),
          row_scale(floats(in.tf.row_scale)),
          col_scale(floats(in.tf.col_scale)),
          bias(floats(in.tf.bias)),
          q_norm(floats(in.tf.q_norm)),
          k_norm(floats(in.tf.k_norm)),
          rope(floats(in.tf.rope)),
          lengths(size_t(in.shape.batch) * sizeof(int32_t), "test lengths"),
          values(poisoned(size_t(in.shape.batch * in.shape.n_heads * in.shape.head_dim) * 2)),
          fp8(poisoned(size_t(in.shape.batch * in.shape.n_heads * in.shape.head_dim))),
          scales(poisoned(size_t(in.shape.batch) * sizeof(float))),
          v_bound(uploaded(in.v_bound.data(), in.v_bound.size() * sizeof(float))),
          workspace(attn.workspace_bytes(), "test workspace"),
          width(qkv_width(in.shape)),
          eps(in.tf.eps) {
        SPENSE_CUDA_CHECK(cudaMemset(workspace.get(), 0, workspace.bytes()));
    }

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
        const DecodeAttention::Input input{{qkv.as<gpu::bf16>(), width, row_scale.as<float>(), col_scale.as<float>(), bias.as<float>(), {}},
                                           q_norm.as<float>(), k_norm.as<float>(), eps, rope.as<float2>()};
        attn.run(input, k.as<gpu::bf16>(), v.as<gpu::bf16>(), v_bound.as<float>(), lengths.as<int32_t>(), out, workspace.get(), stream);
    }

    DeviceBuffer qkv, k, v, row_scale, col_scale, bias, q_norm, k_norm, rope, lengths, values, fp8, scales, v_bound, workspace;
    int64_t width;
    float eps;
};

// The device caches against the host copy after append(): equal everywhere, up to a BF16 rounding
// step where the new token's values went through the norms and RoPE.
void expect_caches(const DeviceProblem& p, const Inputs& in, const std::string& what) {
    for (const bool is_k : {true, false}) {
        const std::vector<uint16_t>& want = is_k ? in.k : in.v;
        std::vector<uint16_t> got(want.size());
        (is_k ? p.k : p.v).download(got.data(), got.size() * 2);
        int bad = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            if (got[i] == want[i]) continue;
            const float g = bf16_to_f32(got[i]), w = bf16_to_f32(want[i]);
            if (std::isfinite(g) && std::fabs(g - w) <= std::fabs(w) / 128) continue;
            if (bad++ < 5)
                ADD_FAILURE() << what << ": " << (is_k ? "K" : "V") << " cache element " << i << " (position "
                              << i / size_t(in.shape.head_dim) % size_t(in.shape.max_ctx) << ") is " << g << ", expected " << w;
        }
        EXPECT_EQ(bad, 0) << what << ": " << (is_k ? "K" : "V") << " cache elements off";
    }
    std::vector<float> bounds(in.v_bound.size());
    p.v_bound.download(bounds.data(), bounds.size() * sizeof(float));
    for (size_t i = 0; i < bounds.size(); ++i) EXPECT_EQ(bounds[i], in.v_bound[i]) << what << ": V bound " << i;
}

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

// FP8 codes decoded with their row scales; the scales checked against the header's formula (from
// the appended host bounds) and against the reference row amax, which they must cover.
std::vector<float> download_fp8(const DeviceProblem& p, const Inputs& in, const std::vector<double>& ref, const std::string& what) {
    const DecodeAttentionShape& s = in.shape;
    const int64_t width = s.n_heads * s.head_dim;
    std::vector<uint8_t> codes(size_t(s.batch * width));
    std::vector<float> scales(static_cast<size_t>(s.batch));
    p.fp8.download(codes.data(), codes.size());
    p.scales.download(scales.data(), scales.size() * sizeof(float));
    std::vector<float> out(codes.size());
    for (int64_t b = 0; b < s.batch; ++b) {
        double amax = 0;
        for (int64_t i = 0; i < width; ++i) amax = std::max(amax, std::fabs(ref[size_t(b * width + i)]));
        float bound = 0.0f;
        for (int64_t kv = 0; kv < s.n_kv_heads; ++kv) bound = std::max(bound, in.v_bound[size_t(b * s.n_kv_heads + kv)]);
        const float want = bound > 0.0f ? bound * (1.0f + 1.0f / 128.0f) / 448.0f : 1.0f;
        EXPECT_NEAR(scales[size_t(b)], want, 1e-6 * want) << what << ": row scale of sequence " << b;
        EXPECT_GE(scales[size_t(b)], amax / 448.0) << what << ": row scale of sequence " << b << " below the row's amax / 448";
        for (int64_t i = 0; i < width; ++i) out[size_t(b * width + i)] = test::e4m3_decode(codes[size_t(b * width + i)]) * scales[size_t(b)];
    }
    return out;
}

// BF16 and FP8 outputs and the appended caches of one problem against the reference.
void check_problem(const DecodeAttentionShape& shape, const std::vector<int32_t>& lengths, uint64_t seed, const Transforms& tf = {}) {
    const std::string what = cat("batch ", shape.batch, ", ", shape.n_heads, "/", shape.n_kv_heads, " heads of ", shape.head_dim, ", context ",
                                 shape.max_ctx, ", window ", shape.window, ", chunk ", shape.chunk);
    ASSERT_EQ(int64_t(lengths.size()), shape.batch);
    const DecodeAttention attn(shape, device_props());
    Inputs in = make_inputs(shape, {lengths}, seed, tf);
    DeviceProblem p(attn, in);
    append(in, lengths);
    const std::vector<double> ref = reference(in, lengths);
    p.set_lengths(lengths, nullptr);
    p.run(attn, false, nullptr);
    p.run(attn, true, nullptr);
    SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
    const size_t count = size_t(shape.batch * shape.n_heads * shape.head_dim);
    const std::string where = cat(what, " (", attn.splits(), " chunks of ", attn.chunk(), ")");
    expect_close(download_bf16(p.values, count), ref, shape, 1e-2, where + ", BF16");
    // E4M3 keeps 3 mantissa bits: rounding moves a value by at most 1/16 of it (by 2^-10 s below
    // the normal range), so each head stays within 1/16 of its largest value, plus the BF16 error.
    expect_close(download_fp8(p, in, ref, where), ref, shape, 0.07, where + ", FP8");
    expect_caches(p, in, where);
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

// The automatic chunk (host code: runs without a GPU). Qwen3-32B's layer on an H200 (132 SMs, two
// blocks each): batch 32 fills the slots with one chunk, batch 8 takes the one wave of 4 chunks,
// batch 1 the smallest chunks; and the bounds of the header for any shape.
TEST(DecodeAttentionChunk, OneWaveWhereItFits) {
    EXPECT_EQ(gpu::decode_attention_chunk(4096, 256, 264), 4096);
    EXPECT_EQ(gpu::decode_attention_chunk(4096, 64, 264), 1024);
    EXPECT_EQ(gpu::decode_attention_chunk(4096, 8, 264), 512);
    EXPECT_EQ(gpu::decode_attention_chunk(4096, 512, 264), 4096);
    EXPECT_EQ(gpu::decode_attention_chunk(100, 8, 264), 128);
    std::mt19937_64 rng(3);
    for (int i = 0; i < 2000; ++i) {
        const int64_t max_ctx = std::uniform_int_distribution<int64_t>(1, 200000)(rng);
        const int64_t units = std::uniform_int_distribution<int64_t>(1, 4096)(rng);
        const int64_t slots = std::uniform_int_distribution<int64_t>(1, 1000)(rng);
        const int64_t chunk = gpu::decode_attention_chunk(max_ctx, units, slots), whole = (max_ctx + 63) / 64 * 64;
        const std::string where = cat("max_ctx ", max_ctx, ", units ", units, ", slots ", slots, ": chunk ", chunk);
        EXPECT_EQ(chunk % 64, 0) << where;
        EXPECT_GE(chunk, std::min<int64_t>(512, whole)) << where;
        EXPECT_LE(chunk, whole) << where;
        EXPECT_LE((max_ctx + chunk - 1) / chunk, 128) << where;
    }
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

// Qwen3's path: FP8 row and column scales with a bias on the GEMM output, q and k norms, RoPE at
// each sequence's own position.
TEST(GpuDecodeAttention, NormsRopeAndScaledInputs) {
    REQUIRE_GPU();
    const DecodeAttentionShape s{4, 16, 4, 128, 700};
    std::mt19937_64 rng(21);
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    Transforms tf;
    const int64_t width = qkv_width(s), half = s.head_dim / 2;
    for (int64_t b = 0; b < s.batch; ++b) tf.row_scale.push_back(u(rng) * 0.02f);
    for (int64_t c = 0; c < width; ++c) {
        tf.col_scale.push_back(u(rng) * 0.05f);
        tf.bias.push_back(u(rng) - 1.0f);
    }
    for (int64_t d = 0; d < s.head_dim; ++d) {
        tf.q_norm.push_back(u(rng));
        tf.k_norm.push_back(u(rng));
    }
    for (int64_t pos = 0; pos < s.max_ctx; ++pos)
        for (int64_t i = 0; i < half; ++i) {
            const double angle = double(pos) * std::pow(10000.0, -double(i) / double(half));
            tf.rope.push_back(float(std::cos(angle)));
            tf.rope.push_back(float(std::sin(angle)));
        }
    check_problem(s, {1, 700, 333, 64}, 22, tf);
}

// The engine captures the decode step once and replays it with new lengths: the same graph must
// give each step's answer.
TEST(GpuDecodeAttention, GraphReplayWithNewLengths) {
    REQUIRE_GPU();
    const DecodeAttentionShape s{6, 12, 4, 128, 2000};
    const std::vector<std::vector<int32_t>> steps = {{1, 2000, 700, 1025, 3, 64}, {2, 1999, 1500, 1, 900, 65}, {1, 2000, 700, 1025, 3, 64}};
    const DecodeAttention attn(s, device_props());
    Inputs in = make_inputs(s, steps, 13);
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
        append(in, steps[step]);
        const std::vector<double> ref = reference(in, steps[step]);
        const std::string what = cat("graph replay, step ", step);
        expect_close(download_bf16(p.values, count), ref, s, 1e-2, what + ", BF16");
        expect_close(download_fp8(p, in, ref, what), ref, s, 0.07, what + ", FP8");
        expect_caches(p, in, what);
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
    expect_error({2, 8, 2, 128, int64_t(1) << 24}, "a sequence's cache or a row of the q|k|v output exceeds 2^31 elements");
    expect_error({0, 8, 2, 64, 100}, "batch must lie in [1, 65535]");
    expect_error({2, 8, 2, 64, 100, -1}, "window must be >= 0");
    expect_error({2, 8, 2, 64, 100, 0, 100}, "must be a multiple of 64");
}

}  // namespace
}  // namespace spense

#endif  // SPENSE_HAS_CUDA
