// cuBLASLt alone at decode sizes: a dense GEMM y[n, m] = x[n, k] W[m, k]^T with k whole (cuBLASLt's
// own split-K and reduction) against k's halves as one strided batch into two outputs, the form
// GemmShape::max_k_parts lets DenseGemm choose (gemm.h), and in quarters. Qwen3-32B's down (5120 x
// 25600), o_proj (5120 x 8192) and qkv (10240 x 5120), FP8 (or BF16) inputs of random bytes (the
// values do not change the timing), BF16 and float32 outputs; each form's heuristic top 8 timed in a
// CUDA graph of 50 GEMMs over weight copies larger than L2, the median of 7 replays, the best
// printed. Usage: dense_k_halves [N] [bf16] (bash bench/run_decode_device.sh khalves;
// bench/results/decode-h200-k-halves.md).
#include <cublasLt.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define CK(x)                                                                          \
    do {                                                                               \
        auto e_ = (x);                                                                 \
        if (e_ != 0) {                                                                 \
            std::fprintf(stderr, "%s:%d %s -> %d\n", __FILE__, __LINE__, #x, int(e_)); \
            std::exit(1);                                                              \
        }                                                                              \
    } while (0)

__global__ void fill(uint8_t* p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 2654435761u ^ seed;
        h ^= h >> 13;
        h *= 0x5bd1e995u;
        h ^= h >> 15;
        const float v = (float(h & 0xffff) / 65535.0f - 0.5f) * 2.0f;
        p[i] = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
    }
}

struct Variant {
    int S;
    cudaDataType_t out;
};

int main(int argc, char** argv) {
    cublasLtHandle_t lt;
    CK(cublasLtCreate(&lt));
    const int n = argc > 1 ? std::atoi(argv[1]) : 32;
    const bool bf16 = argc > 2 && std::string(argv[2]) == "bf16";
    const int eb = bf16 ? 2 : 1;
    const cudaDataType_t in_t = bf16 ? CUDA_R_16BF : CUDA_R_8F_E4M3;
    struct Shape {
        const char* name;
        long m, k;
    } shapes[] = {{"down", 5120, 25600}, {"o", 5120, 8192}, {"qkv", 10240, 5120}};
    size_t ws_bytes = 64 << 20;
    void* ws;
    CK(cudaMalloc(&ws, ws_bytes));
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (const Shape& sh : shapes) {
        const size_t wbytes = size_t(sh.m) * sh.k * eb;
        const int copies = int(std::max<size_t>(4, (600ull << 20) / wbytes + 1));
        uint8_t* w;
        CK(cudaMalloc(&w, wbytes * copies));
        fill<<<1024, 256>>>(w, wbytes * copies, 1);
        uint8_t* x;
        CK(cudaMalloc(&x, size_t(n) * sh.k * eb));
        fill<<<64, 256>>>(x, size_t(n) * sh.k * eb, 2);
        void* y;
        CK(cudaMalloc(&y, size_t(n) * sh.m * 4 * 4));
        CK(cudaDeviceSynchronize());
        for (Variant v : {Variant{1, CUDA_R_16BF}, Variant{2, CUDA_R_16BF}, Variant{4, CUDA_R_16BF}, Variant{1, CUDA_R_32F}, Variant{2, CUDA_R_32F}}) {
            if (sh.k % (v.S * 16) != 0) continue;
            const long ks = sh.k / v.S;
            cublasLtMatmulDesc_t op;
            CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            cublasOperation_t t = CUBLAS_OP_T, nn = CUBLAS_OP_N;
            CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
            CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &nn, sizeof nn));
            cublasLtMatrixLayout_t a, b, c;
            CK(cublasLtMatrixLayoutCreate(&a, in_t, ks, sh.m, sh.k));
            CK(cublasLtMatrixLayoutCreate(&b, in_t, ks, n, sh.k));
            CK(cublasLtMatrixLayoutCreate(&c, v.out, sh.m, n, sh.m));
            if (v.S > 1) {
                const int32_t cnt = v.S;
                const int64_t sa = ks, sc = int64_t(sh.m) * n;
                for (auto l : {a, b, c}) CK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &cnt, sizeof cnt));
                CK(cublasLtMatrixLayoutSetAttribute(a, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa));
                CK(cublasLtMatrixLayoutSetAttribute(b, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa));
                CK(cublasLtMatrixLayoutSetAttribute(c, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sc, sizeof sc));
            }
            cublasLtMatmulPreference_t pref;
            CK(cublasLtMatmulPreferenceCreate(&pref));
            CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
            cublasLtMatmulHeuristicResult_t res[8];
            int got = 0;
            const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(lt, op, a, b, c, c, pref, 8, res, &got);
            double best = 1e9;
            int best_i = -1;
            for (int i = 0; hs == CUBLAS_STATUS_SUCCESS && i < got; ++i) {
                const float alpha = 1, beta = 0;
                auto launch = [&](int r) {
                    return cublasLtMatmul(lt, op, &alpha, w + size_t(r % copies) * wbytes, a, x, b, &beta, y, c, y, c, &res[i].algo, ws,
                                          ws_bytes, st);
                };
                if (launch(0) != CUBLAS_STATUS_SUCCESS) continue;
                CK(cudaStreamSynchronize(st));
                const int reps = 50;
                cudaGraph_t g;
                cudaGraphExec_t ge;
                CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
                for (int r = 0; r < reps; ++r) launch(r);
                CK(cudaStreamEndCapture(st, &g));
                CK(cudaGraphInstantiate(&ge, g, 0));
                CK(cudaGraphLaunch(ge, st));
                std::vector<float> ms;
                for (int rep = 0; rep < 7; ++rep) {
                    CK(cudaEventRecord(e0, st));
                    CK(cudaGraphLaunch(ge, st));
                    CK(cudaEventRecord(e1, st));
                    CK(cudaEventSynchronize(e1));
                    float t;
                    CK(cudaEventElapsedTime(&t, e0, e1));
                    ms.push_back(t / reps);
                }
                CK(cudaGraphExecDestroy(ge));
                CK(cudaGraphDestroy(g));
                std::sort(ms.begin(), ms.end());
                if (ms[3] < best) best = ms[3], best_i = i;
            }
            std::printf("| %s %s N=%d | m=%ld k=%ld | S=%d | %s | %d cands | best #%d | %.2f us | %.0f GB/s |\n", sh.name, bf16 ? "bf16" : "fp8", n, sh.m, sh.k, v.S,
                        v.out == CUDA_R_16BF ? "bf16" : "f32", got, best_i, best * 1e3, wbytes / (best * 1e-3) / 1e9);
            cublasLtMatmulPreferenceDestroy(pref);
            cublasLtMatrixLayoutDestroy(a);
            cublasLtMatrixLayoutDestroy(b);
            cublasLtMatrixLayoutDestroy(c);
            cublasLtMatmulDescDestroy(op);
        }
        CK(cudaFree(w));
        CK(cudaFree(x));
        CK(cudaFree(y));
    }
    return 0;
}
