#include "gpu/gpu_pruner.h"

#include <cublas_v2.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/device_buffer.h"
#include "gpu/layer_forward.h"
#include "gpu/prune_kernels.h"

namespace spense::gpu {

GpuMath parse_gpu_math(const std::string& s) {
    if (s == "f32") return GpuMath::F32;
    if (s == "tf32") return GpuMath::TF32;
    if (s == "bf16") return GpuMath::BF16;
    fail("--precision '", s, "' is not one of: f32, tf32, bf16");
}

const char* gpu_math_name(GpuMath m) { return m == GpuMath::F32 ? "f32" : m == GpuMath::TF32 ? "tf32" : "bf16"; }

namespace {

template <typename T>
DeviceBuffer upload(const std::vector<T>& v, const std::string& what) {
    DeviceBuffer b(v.size() * sizeof(T), what);
    b.upload(v.data(), v.size() * sizeof(T));
    return b;
}

DeviceBuffer upload(const Matrix& m, const std::string& what) { return upload(m.data, what); }

template <typename T>
std::vector<T> download(const DeviceBuffer& b, size_t n) {
    std::vector<T> v(n);
    b.download(v.data(), n * sizeof(T));
    return v;
}

// The calibration activations [samples * T, width] in chunks of samples: all on the device, or in
// pinned host memory with one device chunk they pass through.
class ActivationStore {
public:
    ActivationStore(int64_t samples, int64_t T, int64_t width, int64_t chunk_samples, int64_t budget_bytes)
        : samples_(samples), T_(T), width_(width), chunk_samples_(chunk_samples) {
        const size_t bytes = size_t(samples * T * width) * sizeof(float);
        if (int64_t(bytes) <= budget_bytes) {
            device_ = DeviceBuffer(bytes, "calibration activations");
        } else {
            SPENSE_CUDA_CHECK(cudaMallocHost(&host_, bytes), "calibration activations in pinned host memory: ", bytes, " bytes");
            staging_ = DeviceBuffer(size_t(chunk_samples * T * width) * sizeof(float), "a chunk of calibration activations");
        }
    }
    ~ActivationStore() {
        if (host_) cudaFreeHost(host_);
    }
    ActivationStore(const ActivationStore&) = delete;
    ActivationStore& operator=(const ActivationStore&) = delete;

    bool on_device() const { return host_ == nullptr; }
    int64_t chunks() const { return (samples_ + chunk_samples_ - 1) / chunk_samples_; }
    int64_t chunk_samples() const { return chunk_samples_; }
    int64_t samples_in(int64_t c) const { return std::min(chunk_samples_, samples_ - c * chunk_samples_); }
    int64_t rows(int64_t c) const { return samples_in(c) * T_; }

    // The device rows of chunk c (valid until the next acquire).
    float* acquire(int64_t c) {
        const size_t offset = size_t(c * chunk_samples_ * T_ * width_);
        if (on_device()) return device_.as<float>() + offset;
        SPENSE_CUDA_CHECK(cudaMemcpy(staging_.get(), host_ + offset, bytes(c), cudaMemcpyHostToDevice), "activation chunk ", c);
        return staging_.as<float>();
    }
    void release(int64_t c, bool modified) {
        if (on_device() || !modified) return;
        SPENSE_CUDA_CHECK(cudaMemcpy(host_ + size_t(c * chunk_samples_ * T_ * width_), staging_.get(), bytes(c), cudaMemcpyDeviceToHost),
                          "activation chunk ", c);
    }

private:
    size_t bytes(int64_t c) const { return size_t(rows(c) * width_) * sizeof(float); }

    int64_t samples_, T_, width_, chunk_samples_;
    DeviceBuffer device_, staging_;
    float* host_ = nullptr;
};

// X^T X of one activation, summed in float64, then H = 2 X^T X / tokens (hessian.h).
struct DeviceStat {
    int64_t dim = 0, tokens = 0;
    DeviceBuffer sum, h;       // float64 [dim, dim]; sum is freed once h is formed
    std::vector<double> diag;  // diag(X^T X): the column norms
    bool has_hessian = false;

    void reset(int64_t d, const std::string& what) {
        dim = d;
        tokens = 0;
        has_hessian = false;
        h = DeviceBuffer();
        sum = DeviceBuffer(size_t(d * d) * sizeof(double), what + " Hessian sum");
        SPENSE_CUDA_CHECK(cudaMemset(sum.get(), 0, sum.bytes()), what);
    }
};

}  // namespace

struct GpuPruneBackend::Impl {
    const Transformer& model;
    const ModelConfig& cfg;
    GpuPruneOptions opt;
    cudaDeviceProp props{};
    cublasHandle_t blas = nullptr;
    cusolverDnHandle_t solver = nullptr;
    std::unique_ptr<ActivationStore> x;
    int64_t samples = 0, T = 0;
    DeviceBuffer rope_cos, rope_sin;
    std::map<std::string, DeviceBuffer> scratch;
    DeviceStat input, z0, z;
    Z0Stats z0_kind = Z0Stats::None;
    std::vector<double> z0_norms;
    // Device-wide bytes in use (cudaMemGetInfo): when this backend started (other processes and this
    // process's context), and the largest seen since.
    int64_t used_at_start = 0, peak_used = 0;
    std::map<std::string, double> stages;

    Impl(const Transformer& m, GpuPruneOptions o) : model(m), cfg(m.config()), opt(o) {
        SPENSE_CHECK(cuda_device_available(), "--device cuda: no usable CUDA device");
        int dev = 0;
        SPENSE_CUDA_CHECK(cudaGetDevice(&dev));
        SPENSE_CUDA_CHECK(cudaGetDeviceProperties(&props, dev));
        note_memory();
        used_at_start = peak_used;
        SPENSE_CUBLAS_CHECK(cublasCreate(&blas), "pruning backend");
        SPENSE_CUSOLVER_CHECK(cusolverDnCreate(&solver), "pruning backend");
        note_memory();
    }
    ~Impl() {
        if (solver) cusolverDnDestroy(solver);
        if (blas) cublasDestroy(blas);
    }

    void note_memory() {
        size_t free = 0, total = 0;
        SPENSE_CUDA_CHECK(cudaMemGetInfo(&free, &total));
        peak_used = std::max(peak_used, int64_t(total - free));
    }

    // Runs fn as stage `name`, timed to the end of its device work.
    void timed(const char* name, const std::function<void()>& fn) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        SPENSE_CUDA_CHECK(cudaDeviceSynchronize(), name);
        stages[name] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        note_memory();
    }

    // A scratch buffer of at least `elems` T's, kept for reuse.
    template <typename T>
    T* buffer(const std::string& name, int64_t elems) {
        DeviceBuffer& b = scratch[name];
        if (b.bytes() < size_t(elems) * sizeof(T)) {
            b = DeviceBuffer();
            b = DeviceBuffer(size_t(elems) * sizeof(T), "pruning scratch " + name);
        }
        return b.as<T>();
    }

    cublasComputeType_t compute() const {
        return opt.math == GpuMath::F32 ? CUBLAS_COMPUTE_32F : opt.math == GpuMath::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F_FAST_16BF;
    }

    // y [n, out] = x [n, in] W^T + beta y, W [out, in] (row-major, as PyTorch's linear).
    void linear(const float* xp, const float* w, float* y, int64_t n, int64_t in, int64_t out, float beta = 0.0f) {
        const float one = 1.0f;
        SPENSE_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(n), int(in), &one, w, CUDA_R_32F, int(in), xp,
                                         CUDA_R_32F, int(in), &beta, y, CUDA_R_32F, int(out), compute(), CUBLAS_GEMM_DEFAULT),
                            "linear [", n, ", ", in, "] x [", out, ", ", in, "]^T");
    }

    // stat.sum += x^T x for x [n, dim], one calibration sequence (T rows) per product. In f32 mode
    // as the CPU reference forms it (hessian.h): products and sums in float64, so that the two
    // differ only by their activations, not by the rounding of each product's summation order
    // (float32 products agreed with the CPU on 98.2% of SmolLM2's groups). tf32 and bf16 form each
    // product in float32 on tensor cores and sum the products in float64.
    void add_gram(DeviceStat& st, const float* xp, int64_t n) {
        const int d = int(st.dim);
        const float one = 1.0f, zero = 0.0f;
        const double one_d = 1.0;
        for (int64_t r0 = 0; r0 < n; r0 += T) {
            const int rows = int(std::min(T, n - r0));
            const float* xb = xp + r0 * st.dim;
            if (opt.math == GpuMath::F32) {
                double* wide = buffer<double>("gram rows", T * st.dim);
                launch_diff_f64(xb, nullptr, wide, int64_t(rows) * st.dim, nullptr);
                SPENSE_CUBLAS_CHECK(cublasDsyrk(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, d, rows, &one_d, wide, d, &one_d,
                                                st.sum.as<double>(), d),
                                    "X^T X of [", rows, ", ", d, "]");
                continue;
            }
            float* batch = buffer<float>("gram", st.dim * st.dim);
            SPENSE_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_T, d, d, rows, &one, xb, CUDA_R_32F, d, xb, CUDA_R_32F, d, &zero,
                                             batch, CUDA_R_32F, d, compute(), CUBLAS_GEMM_DEFAULT),
                                "X^T X of [", rows, ", ", d, "]");
            launch_add_lower_f64(batch, st.sum.as<double>(), st.dim, nullptr);
        }
        st.tokens += n;
    }

    void finalize(DeviceStat& st, const std::string& what) {
        SPENSE_CHECK(st.tokens > 0, what, ": no calibration tokens were accumulated");
        st.diag.resize(size_t(st.dim));
        SPENSE_CUDA_CHECK(cudaMemcpy2D(st.diag.data(), sizeof(double), st.sum.get(), size_t(st.dim + 1) * sizeof(double), sizeof(double),
                                       size_t(st.dim), cudaMemcpyDeviceToHost),
                          what, " diagonal");
        for (int64_t j = 0; j < st.dim; ++j)
            if (!std::isfinite(st.diag[size_t(j)]))
                fail("non-finite value in the calibration activations of ", what, " (feature ", j,
                     "); the model overflows on the calibration text (check the checkpoint's dtype and weights)");
        st.h = DeviceBuffer(size_t(st.dim * st.dim) * sizeof(double), what + " Hessian");
        launch_finalize_hessian(st.sum.as<double>(), st.h.as<double>(), st.dim, 2.0 / double(st.tokens), nullptr);
        note_memory();
        st.sum = DeviceBuffer();
        st.has_hessian = true;
    }

    DeviceStat& stat(Stat s) {
        DeviceStat& st = s == Stat::Input ? input : s == Stat::Intermediate ? z : z0;
        SPENSE_CHECK(st.has_hessian, "pruning backend: a Hessian was asked for before it was collected");
        return st;
    }

    // The factor U = cholesky_upper(H^-1) of the damped Hessian with dead inputs fixed (H_jj = 0
    // -> 1), in `work` [n, n] float64 row-major upper triangle (the lower one holds leftovers).
    // Column-major LOWER factors of the symmetric matrix are row-major upper ones: potrf gives
    // H = L L^T, potri overwrites L with H^-1 (that triangle), potrf again gives H^-1 = L' L'^T,
    // and L'^T read row-major is U with H^-1 = U^T U. Returns the dead inputs.
    std::vector<uint8_t> inverse_factor(const DeviceStat& st, DeviceBuffer& work, double percdamp, const std::string& what) {
        const int64_t n = st.dim;
        work = DeviceBuffer(size_t(n * n) * sizeof(double), what + " inverse Hessian factor");
        SPENSE_CUDA_CHECK(cudaMemcpy(work.get(), st.h.get(), work.bytes(), cudaMemcpyDeviceToDevice), what);
        std::vector<double> diag(static_cast<size_t>(n));
        const size_t pitch = size_t(n + 1) * sizeof(double);
        SPENSE_CUDA_CHECK(cudaMemcpy2D(diag.data(), sizeof(double), work.get(), pitch, sizeof(double), size_t(n), cudaMemcpyDeviceToHost), what);
        std::vector<uint8_t> dead(size_t(n), 0);
        double mean_diag = 0;
        for (int64_t j = 0; j < n; ++j) {
            if (diag[size_t(j)] == 0.0) {
                diag[size_t(j)] = 1.0;
                dead[size_t(j)] = 1;
            }
            mean_diag += diag[size_t(j)];
        }
        const double damp = percdamp * mean_diag / double(n);
        for (double& v : diag) v += damp;
        SPENSE_CUDA_CHECK(cudaMemcpy2D(work.get(), pitch, diag.data(), sizeof(double), sizeof(double), size_t(n), cudaMemcpyHostToDevice), what);

        double* a = work.as<double>();
        const int ni = int(n);
        int lwork = 0, lwork_inv = 0;
        SPENSE_CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, ni, a, ni, &lwork), what);
        SPENSE_CUSOLVER_CHECK(cusolverDnDpotri_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, ni, a, ni, &lwork_inv), what);
        double* ws = buffer<double>("cusolver", std::max(lwork, lwork_inv));
        int* info_d = buffer<int>("cusolver info", 1);
        auto check_info = [&](const char* step) {
            int info = 0;
            SPENSE_CUDA_CHECK(cudaMemcpy(&info, info_d, sizeof(int), cudaMemcpyDeviceToHost), what);
            if (info != 0) fail(what, ": ", step, " failed (info ", info, "): the damped Hessian is not positive definite; raise --percdamp");
        };
        SPENSE_CUSOLVER_CHECK(cusolverDnDpotrf(solver, CUBLAS_FILL_MODE_LOWER, ni, a, ni, ws, lwork, info_d), what, " Hessian");
        check_info("Cholesky of the Hessian");
        SPENSE_CUSOLVER_CHECK(cusolverDnDpotri(solver, CUBLAS_FILL_MODE_LOWER, ni, a, ni, ws, lwork_inv, info_d), what, " Hessian");
        check_info("inverse of the Hessian");
        SPENSE_CUSOLVER_CHECK(cusolverDnDpotrf(solver, CUBLAS_FILL_MODE_LOWER, ni, a, ni, ws, lwork, info_d), what, " inverse Hessian");
        check_info("Cholesky of the inverse Hessian");
        note_memory();
        return dead;
    }

    // h = mlp_input(x) of a chunk's rows (post_norm: the layer's).
    float* mlp_input(const float* xp, int64_t n, const DeviceBuffer& post_norm) {
        float* h = buffer<float>("h", n * cfg.hidden);
        launch_rms_norm(xp, post_norm.as<float>(), h, n, cfg.hidden, cfg.rms_eps, nullptr);
        return h;
    }

    // The MLP of weights on the device.
    struct DeviceMlp {
        DeviceBuffer gate, up, down;
    };
    DeviceMlp upload_mlp(const DenseMlp& m, const std::string& what) {
        return {upload(m.gate, what + " gate"), upload(m.up, what + " up"), upload(m.down, what + " down")};
    }

    // z = silu(h Wg^T) * (h Wu^T) into buffer `name`.
    float* intermediate(const DeviceMlp& m, const float* h, int64_t n, const std::string& name) {
        const int64_t d = cfg.hidden, f = cfg.intermediate;
        float* g = buffer<float>(name, n * f);
        float* u = buffer<float>("u", n * f);
        linear(h, m.gate.as<float>(), g, n, d, f);
        linear(h, m.up.as<float>(), u, n, d, f);
        launch_swiglu(g, u, n * f, nullptr);
        return g;
    }

    // y = mlp(h) into buffer `name`.
    float* mlp_output(const DeviceMlp& m, const float* h, int64_t n, const std::string& name) {
        const float* zp = intermediate(m, h, n, "g");
        float* y = buffer<float>(name, n * cfg.hidden);
        linear(zp, m.down.as<float>(), y, n, cfg.intermediate, cfg.hidden);
        return y;
    }
};

GpuPruneBackend::GpuPruneBackend(const Transformer& model, GpuPruneOptions opt) : impl_(std::make_unique<Impl>(model, opt)) {}
GpuPruneBackend::~GpuPruneBackend() = default;

void GpuPruneBackend::embed(const CalibrationSet& calib) {
    Impl& m = *impl_;
    const int64_t d = m.cfg.hidden, f = m.cfg.intermediate;
    m.samples = int64_t(calib.samples.size());
    m.T = int64_t(calib.samples.at(0).size());
    for (const auto& s : calib.samples)
        SPENSE_CHECK(int64_t(s.size()) == m.T, "GPU pruning needs calibration sequences of one length (got ", s.size(), " and ", m.T, ")");
    // Chunks of about 2^29 floats of intermediate activation.
    const int64_t chunk = std::clamp<int64_t>((int64_t(1) << 29) / (std::max(f, d) * m.T), 1, m.samples);
    int64_t budget = m.opt.activation_budget_bytes;
    if (budget < 0) {
        // What a layer needs besides: the d_ff Hessian's sum, H and factor (float64) and its batch
        // product (float32), two MLPs' weights, float64 copies for errors, chunk scratch, 2 GiB spare.
        const int64_t rows = chunk * m.T;
        const int64_t working = 3 * f * f * 8 + f * f * 4 + 6 * f * d * 4 + 2 * f * d * 8 +
                                rows * (3 * f + 4 * d + 2 * m.cfg.n_heads * m.cfg.head_dim + 2 * m.cfg.n_kv_heads * m.cfg.head_dim) * 4 +
                                (int64_t(2) << 30);
        size_t free = 0, total = 0;
        SPENSE_CUDA_CHECK(cudaMemGetInfo(&free, &total));
        budget = int64_t(free) - working;
    }
    m.x = std::make_unique<ActivationStore>(m.samples, m.T, d, chunk, budget);
    m.timed("embed", [&] {
    for (int64_t c = 0; c < m.x->chunks(); ++c) {
        std::vector<float> host(size_t(m.x->rows(c) * d));
        for (int64_t s = 0; s < m.x->samples_in(c); ++s) {
            const Matrix e = m.model.embed(calib.samples[size_t(c * chunk + s)]);
            std::copy(e.data.begin(), e.data.end(), host.begin() + s * m.T * d);
        }
        float* xp = m.x->acquire(c);
        SPENSE_CUDA_CHECK(cudaMemcpy(xp, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice), "embeddings");
        m.x->release(c, true);
    }
    });
    // RoPE tables, as the CPU computes them: angle = pos * inv_freq in float64.
    const std::vector<double> inv_freq = m.cfg.rope_inv_freq();
    const int64_t half = m.cfg.head_dim / 2;
    std::vector<float> cs(size_t(m.T * half)), sn(size_t(m.T * half));
    for (int64_t t = 0; t < m.T; ++t)
        for (int64_t i = 0; i < half; ++i) {
            const double angle = double(t) * inv_freq[size_t(i)];
            cs[size_t(t * half + i)] = float(std::cos(angle));
            sn[size_t(t * half + i)] = float(std::sin(angle));
        }
    m.rope_cos = upload(cs, "RoPE cos");
    m.rope_sin = upload(sn, "RoPE sin");
    m.note_memory();
}

void GpuPruneBackend::attention(int64_t l) {
    Impl& m = *impl_;
    const ModelConfig& c = m.cfg;
    const LayerWeights& lw = m.model.weights().layers[size_t(l)];
    const AttentionWeights& a = lw.attn;
    const int64_t d = c.hidden, hd = c.head_dim, qd = c.n_heads * hd, kvd = c.n_kv_heads * hd;
    m.timed("forward", [&] {
        const std::string what = "layer " + std::to_string(l);
        DeviceBuffer norm = upload(lw.input_norm, what + " input_norm"), wq = upload(a.q, what + " q"), wk = upload(a.k, what + " k"),
                     wv = upload(a.v, what + " v"), wo = upload(a.o, what + " o");
        DeviceBuffer qb, kb, vb, ob, qn, kn;
        if (!a.q_bias.empty()) {
            qb = upload(a.q_bias, what + " q bias");
            kb = upload(a.k_bias, what + " k bias");
            vb = upload(a.v_bias, what + " v bias");
        }
        if (!a.o_bias.empty()) ob = upload(a.o_bias, what + " o bias");
        if (c.qk_norm) {
            qn = upload(a.q_norm, what + " q_norm");
            kn = upload(a.k_norm, what + " k_norm");
        }
        for (int64_t ch = 0; ch < m.x->chunks(); ++ch) {
            float* xp = m.x->acquire(ch);
            const int64_t n = m.x->rows(ch);
            float* h = m.buffer<float>("h", n * d);
            float* q = m.buffer<float>("q", n * qd);
            float* k = m.buffer<float>("k", n * kvd);
            float* v = m.buffer<float>("v", n * kvd);
            float* o = m.buffer<float>("attn", n * qd);
            launch_rms_norm(xp, norm.as<float>(), h, n, d, c.rms_eps, nullptr);
            m.linear(h, wq.as<float>(), q, n, d, qd);
            m.linear(h, wk.as<float>(), k, n, d, kvd);
            m.linear(h, wv.as<float>(), v, n, d, kvd);
            if (qb.get()) {
                launch_add_bias(q, qb.as<float>(), n, qd, nullptr);
                launch_add_bias(k, kb.as<float>(), n, kvd, nullptr);
                launch_add_bias(v, vb.as<float>(), n, kvd, nullptr);
            }
            if (c.qk_norm) {
                launch_head_rms_norm(q, qn.as<float>(), n, qd, hd, c.rms_eps, nullptr);
                launch_head_rms_norm(k, kn.as<float>(), n, kvd, hd, c.rms_eps, nullptr);
            }
            launch_rope(q, m.rope_cos.as<float>(), m.rope_sin.as<float>(), n, qd, hd, m.T, nullptr);
            launch_rope(k, m.rope_cos.as<float>(), m.rope_sin.as<float>(), n, kvd, hd, m.T, nullptr);
            launch_attention(q, k, v, o, {m.x->samples_in(ch), m.T, c.n_heads, c.n_kv_heads, hd, c.sliding_window}, nullptr);
            m.linear(o, wo.as<float>(), xp, n, qd, d, 1.0f);
            if (ob.get()) launch_add_bias(xp, ob.as<float>(), n, d, nullptr);
            m.x->release(ch, true);
        }
        m.note_memory();
    });
}

void GpuPruneBackend::mlp_forward(int64_t l, const DenseMlp& mlp) {
    Impl& m = *impl_;
    m.timed("forward", [&] {
        const std::string what = "layer " + std::to_string(l);
        const DeviceBuffer post = upload(m.model.weights().layers[size_t(l)].post_norm, what + " post_norm");
        const Impl::DeviceMlp w = m.upload_mlp(mlp, what);
        for (int64_t ch = 0; ch < m.x->chunks(); ++ch) {
            float* xp = m.x->acquire(ch);
            const int64_t n = m.x->rows(ch);
            const float* y = m.mlp_output(w, m.mlp_input(xp, n, post), n, "y");
            launch_add(xp, y, n * m.cfg.hidden, nullptr);
            m.x->release(ch, true);
        }
    });
}

void GpuPruneBackend::collect_input(int64_t l, const DenseMlp& mlp, Z0Stats z0, const std::string& what) {
    Impl& m = *impl_;
    const int64_t d = m.cfg.hidden, f = m.cfg.intermediate;
    const DeviceBuffer post = upload(m.model.weights().layers[size_t(l)].post_norm, what + " post_norm");
    m.input.reset(d, what + " mlp input");
    m.z0_kind = z0;
    m.z0 = DeviceStat();
    if (z0 == Z0Stats::Hessian) m.z0.reset(f, what + " unpruned intermediate");
    Impl::DeviceMlp w;
    if (z0 != Z0Stats::None) {
        w.gate = upload(mlp.gate, what + " gate");
        w.up = upload(mlp.up, what + " up");
    }
    double* norms = z0 == Z0Stats::ColumnNorms ? m.buffer<double>("z0 norms", f) : nullptr;
    if (norms) SPENSE_CUDA_CHECK(cudaMemset(norms, 0, size_t(f) * sizeof(double)));
    for (int64_t ch = 0; ch < m.x->chunks(); ++ch) {
        float* xp = m.x->acquire(ch);
        const int64_t n = m.x->rows(ch);
        float* h = nullptr;
        m.timed("forward", [&] { h = m.mlp_input(xp, n, post); });
        m.timed("hessian", [&] { m.add_gram(m.input, h, n); });
        if (z0 != Z0Stats::None) {
            float* zp = nullptr;
            m.timed("forward", [&] { zp = m.intermediate(w, h, n, "g"); });
            m.timed("hessian", [&] {
                if (norms) launch_add_column_sq_norms(zp, n, f, norms, nullptr);
                else m.add_gram(m.z0, zp, n);
            });
        }
        m.x->release(ch, false);
    }
    m.timed("hessian", [&] {
        m.finalize(m.input, what + " mlp input");
        if (z0 == Z0Stats::Hessian) m.finalize(m.z0, what + " unpruned intermediate");
        if (norms) {
            m.z0_norms.resize(size_t(f));
            SPENSE_CUDA_CHECK(cudaMemcpy(m.z0_norms.data(), norms, size_t(f) * sizeof(double), cudaMemcpyDeviceToHost));
        }
    });
}

void GpuPruneBackend::collect_intermediate(int64_t l, const DenseMlp& mlp, const std::string& what) {
    Impl& m = *impl_;
    const DeviceBuffer post = upload(m.model.weights().layers[size_t(l)].post_norm, what + " post_norm");
    Impl::DeviceMlp w;
    w.gate = upload(mlp.gate, what + " gate");
    w.up = upload(mlp.up, what + " up");
    m.z0 = DeviceStat();  // z0's statistics served the dense choice; free them for z's
    m.z.reset(m.cfg.intermediate, what + " intermediate");
    for (int64_t ch = 0; ch < m.x->chunks(); ++ch) {
        float* xp = m.x->acquire(ch);
        const int64_t n = m.x->rows(ch);
        float* zp = nullptr;
        m.timed("forward", [&] { zp = m.intermediate(w, m.mlp_input(xp, n, post), n, "g"); });
        m.timed("hessian", [&] { m.add_gram(m.z, zp, n); });
        m.x->release(ch, false);
    }
    m.timed("hessian", [&] { m.finalize(m.z, what + " intermediate"); });
}

std::vector<double> GpuPruneBackend::column_sq_norms(Stat s) {
    Impl& m = *impl_;
    if (s == Stat::Intermediate0 && m.z0_kind == Z0Stats::ColumnNorms) return m.z0_norms;
    return m.stat(s).diag;
}

std::vector<double> GpuPruneBackend::sparsegpt_column_weights(Stat s, double percdamp, const std::string& what) {
    Impl& m = *impl_;
    std::vector<double> c;
    m.timed("index_selection", [&] {
        const DeviceStat& st = m.stat(s);
        DeviceBuffer work;
        m.inverse_factor(st, work, percdamp, what);
        std::vector<double> diag(size_t(st.dim));
        SPENSE_CUDA_CHECK(cudaMemcpy2D(diag.data(), sizeof(double), work.get(), size_t(st.dim + 1) * sizeof(double), sizeof(double),
                                       size_t(st.dim), cudaMemcpyDeviceToHost),
                          what);
        for (double& u : diag) u = 1.0 / (u * u);
        c = std::move(diag);
    });
    return c;
}

IndexSums GpuPruneBackend::index_sums(const DenseMlp& mlp, const std::vector<double>& c_in, const std::vector<double>& c_z) {
    Impl& m = *impl_;
    const int64_t f = m.cfg.intermediate, d = m.cfg.hidden;
    SPENSE_CHECK(int64_t(c_in.size()) == d && int64_t(c_z.size()) == f, "index_sums: shapes differ");
    IndexSums s;
    m.timed("index_selection", [&] {
        const Impl::DeviceMlp w = m.upload_mlp(mlp, "index sums");
        const DeviceBuffer cin = upload(c_in, "input column weights");
        DeviceBuffer out(size_t(3 * f) * sizeof(double), "index sums");
        double* o = out.as<double>();
        launch_row_weighted_sq_sums(w.gate.as<float>(), f, d, cin.as<double>(), o, nullptr);
        launch_row_weighted_sq_sums(w.up.as<float>(), f, d, cin.as<double>(), o + f, nullptr);
        launch_column_sq_sums(w.down.as<float>(), d, f, o + 2 * f, nullptr);
        const std::vector<double> all = download<double>(out, size_t(3 * f));
        s.gate.assign(all.begin(), all.begin() + f);
        s.up.assign(all.begin() + f, all.begin() + 2 * f);
        s.down.assign(all.begin() + 2 * f, all.end());
        for (int64_t i = 0; i < f; ++i) s.down[size_t(i)] *= c_z[size_t(i)];
    });
    return s;
}

void GpuPruneBackend::sparsegpt(Stat s, Matrix& w, const PruneSpec& spec, const SparseGptOptions& opt, const std::string& what) {
    Impl& m = *impl_;
    SPENSE_CHECK(s != Stat::Intermediate0, "SparseGPT runs on the input or the pruned intermediate Hessian");
    const int64_t rows = w.rows, cols = w.cols, B = opt.blocksize;
    SPENSE_CHECK(int64_t(spec.dense_column.size()) == cols, what, ": prune spec covers ", spec.dense_column.size(), " of ", cols, " columns");
    SPENSE_CHECK(B > 0 && B <= 128, what, ": GPU SparseGPT takes --blocksize 1 to 128 (got ", B, ")");
    std::vector<int32_t> group_at(size_t(cols), -1), groups;
    for (size_t g = 0; g < spec.groups.size(); ++g) {
        for (int64_t c : spec.groups[g]) {
            SPENSE_CHECK(c >= 0 && c < cols && !spec.dense_column[size_t(c)], what, ": 2:4 group column ", c, " is dense or outside");
            groups.push_back(int32_t(c));
        }
        group_at[size_t(spec.groups[g][0])] = int32_t(g);
    }
    m.timed("sparsegpt", [&] {
        const DeviceStat& st = m.stat(s);
        SPENSE_CHECK(st.dim == cols, what, ": Hessian of ", st.dim, " columns for ", cols);
        DeviceBuffer work;
        const std::vector<uint8_t> dead = m.inverse_factor(st, work, opt.percdamp, what);
        float* u = m.buffer<float>("U", cols * cols);
        launch_f64_to_f32(work.as<double>(), u, cols * cols, nullptr);
        work = DeviceBuffer();

        DeviceBuffer wd = upload(w, what);
        const DeviceBuffer dead_d = upload(dead, what + " dead inputs");
        launch_zero_columns(wd.as<float>(), rows, cols, dead_d.as<uint8_t>(), nullptr);
        const DeviceBuffer group_at_d = upload(group_at, what + " groups"), groups_d = upload(groups.empty() ? std::vector<int32_t>{0} : groups, what + " groups");
        const DeviceBuffer dense_d = upload(spec.dense_column, what + " dense columns");
        DeviceBuffer pruned(size_t(rows * cols), what + " mask");
        SPENSE_CUDA_CHECK(cudaMemset(pruned.get(), 0, pruned.bytes()));
        float* err = m.buffer<float>("err", rows * B);
        const bool unstructured = spec.pattern == PruneSpec::Pattern::Unstructured;
        float* keys = nullptr;
        int32_t* vals = nullptr;
        void* sort_ws = nullptr;
        size_t sort_bytes = 0;
        if (unstructured) {
            keys = m.buffer<float>("keys", 2 * rows * B);
            vals = m.buffer<int32_t>("values", 2 * rows * B);
            sort_bytes = sort_pairs_workspace(rows * B);
            sort_ws = m.buffer<uint8_t>("sort", int64_t(sort_bytes));
        }
        for (int64_t i1 = 0; i1 < cols; i1 += B) {
            const int64_t i2 = std::min(cols, i1 + B), count = i2 - i1;
            if (unstructured) {
                // The block's `sparsity` fraction of prunable weights with the smallest w^2 / U_jj^2.
                int64_t prunable = 0;
                for (int64_t j = i1; j < i2; ++j) prunable += !spec.dense_column[size_t(j)];
                const int64_t n_prune = std::llround(double(prunable * rows) * spec.sparsity);
                const int64_t n = rows * count;
                launch_block_scores(wd.as<float>(), u, dense_d.as<uint8_t>(), rows, cols, i1, count, keys, vals, nullptr);
                sort_pairs(sort_ws, sort_bytes, keys, keys + n, vals, vals + n, n, nullptr);
                launch_mark_pruned(vals + n, n_prune, cols, i1, count, pruned.as<uint8_t>(), nullptr);
            }
            SparseGptBlock b;
            b.w = wd.as<float>();
            b.u = u;
            b.err = err;
            b.pruned = pruned.as<uint8_t>();
            b.group_at = group_at_d.as<int32_t>();
            b.groups = groups_d.as<int32_t>();
            b.rows = rows;
            b.cols = cols;
            b.i1 = i1;
            b.count = count;
            launch_sparsegpt_block(b, nullptr);
            if (i2 < cols) {  // W[:, i2:] -= Err U[i1:i2, i2:]
                const float minus_one = -1.0f, one = 1.0f;
                SPENSE_CUBLAS_CHECK(cublasSgemm(m.blas, CUBLAS_OP_N, CUBLAS_OP_N, int(cols - i2), int(rows), int(count), &minus_one,
                                                u + i1 * cols + i2, int(cols), err, int(count), &one, wd.as<float>() + i2, int(cols)),
                                    what, " lazy update of columns ", i2, "..", cols);
            }
        }
        m.note_memory();
        wd.download(w.data.data(), w.data.size() * sizeof(float));
    });
}

double GpuPruneBackend::relative_error(Stat s, const Matrix& w, const Matrix& w_new) {
    Impl& m = *impl_;
    SPENSE_CHECK(s != Stat::Intermediate0, "errors are measured on the input or the pruned intermediate Hessian");
    SPENSE_CHECK(w.rows == w_new.rows && w.cols == w_new.cols, "relative_error: shapes differ");
    double result = 0;
    m.timed("errors", [&] {
        const DeviceStat& st = m.stat(s);
        const int64_t rows = w.rows, cols = w.cols, n = rows * cols;
        SPENSE_CHECK(st.dim == cols, "relative_error: Hessian of ", st.dim, " columns for ", cols);
        const DeviceBuffer a = upload(w, "error: weight"), b = upload(w_new, "error: new weight");
        double* dm = m.buffer<double>("err d", n);
        double* dh = m.buffer<double>("err dh", n);
        double* dots = m.buffer<double>("err dots", rows);
        // tr(M H M^T) = sum(M .* (M H)) in float64, for M = W - W' and M = W.
        auto quad = [&](const float* x, const float* y) {
            launch_diff_f64(x, y, dm, n, nullptr);
            const double one = 1.0, zero = 0.0;
            SPENSE_CUBLAS_CHECK(cublasDgemm(m.blas, CUBLAS_OP_N, CUBLAS_OP_N, int(cols), int(rows), int(cols), &one, st.h.as<double>(), int(cols),
                                            dm, int(cols), &zero, dh, int(cols)),
                                "relative error [", rows, ", ", cols, "]");
            launch_row_dots_f64(dm, dh, rows, cols, dots, nullptr);
            std::vector<double> v(static_cast<size_t>(rows));
            SPENSE_CUDA_CHECK(cudaMemcpy(v.data(), dots, v.size() * sizeof(double), cudaMemcpyDeviceToHost));
            double sum = 0;
            for (double x : v) sum += x;
            return sum;
        };
        const double num = quad(a.as<float>(), b.as<float>()), den = quad(a.as<float>(), nullptr);
        result = den > 0 ? num / den : 0.0;
    });
    return result;
}

double GpuPruneBackend::apply_mlp(int64_t l, const DenseMlp& pruned, const DenseMlp& original) {
    Impl& m = *impl_;
    const int64_t d = m.cfg.hidden;
    double diff = 0, norm = 0;
    m.timed("forward", [&] {
        const std::string what = "layer " + std::to_string(l);
        const DeviceBuffer post = upload(m.model.weights().layers[size_t(l)].post_norm, what + " post_norm");
        const Impl::DeviceMlp wp = m.upload_mlp(pruned, what + " pruned"), wo = m.upload_mlp(original, what + " original");
        for (int64_t ch = 0; ch < m.x->chunks(); ++ch) {
            float* xp = m.x->acquire(ch);
            const int64_t n = m.x->rows(ch);
            const float* h = m.mlp_input(xp, n, post);
            const float* y_old = m.mlp_output(wo, h, n, "y old");
            const float* y_new = m.mlp_output(wp, h, n, "y");
            double* partial = m.buffer<double>("partial", 2 * n);
            launch_row_diff_norms(y_new, y_old, n, d, partial, nullptr);
            std::vector<double> p(size_t(2 * n));
            SPENSE_CUDA_CHECK(cudaMemcpy(p.data(), partial, p.size() * sizeof(double), cudaMemcpyDeviceToHost));
            for (int64_t r = 0; r < n; ++r) {
                diff += p[size_t(2 * r)];
                norm += p[size_t(2 * r + 1)];
            }
            launch_add(xp, y_new, n * d, nullptr);
            m.x->release(ch, true);
        }
    });
    return norm > 0 ? diff / norm : 0.0;
}

nlohmann::json GpuPruneBackend::describe() const {
    const Impl& m = *impl_;
    return {{"device", "cuda"},
            {"gpu", m.props.name},
            {"math", gpu_math_name(m.opt.math)},
            {"activations", m.x && !m.x->on_device() ? "host" : "device"},
            {"chunk_samples", m.x ? m.x->chunk_samples() : 0},
            {"peak_device_bytes", m.peak_used},
            {"device_bytes_in_use_at_start", m.used_at_start},
            {"stage_seconds", m.stages}};
}

nlohmann::json GpuPruneBackend::take_stage_seconds() {
    nlohmann::json j = impl_->stages;
    impl_->stages.clear();
    return j;
}

}  // namespace spense::gpu
