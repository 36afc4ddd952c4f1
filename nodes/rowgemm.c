/* y = x W^T (+ b) for a few rows of x: the linear layers of a verify forward (nodes/rowgemm.py).

   x: M x I, W: O x I (an nn.Linear weight, row-major), b: O or NULL, y: M x O; float32, contiguous.

   A BLAS GEMM packs W into its own panel layout on every call: for the few rows of a verify (the last token and
   the draft) that pass over the weights costs as much as the product, so on a CPU a 5-token forward of a small
   model cost ~1.6x a 1-token one although both are bound by reading the weights once. Here each W row is read
   once from memory and multiplied into every row of x while it is in registers: the cost of M rows stays close
   to the cost of one, and one row costs no more than MKL's matrix-vector product. Rows of x are taken in groups of up to 6 (2 W rows x 6 x rows = 12 AVX2 accumulators). */

#include <immintrin.h>
#include <stddef.h>

/* Weight rows fetched ahead of their use: the hardware prefetcher alone left the multiply waiting on memory (a
   5-row product of the SmolLM2 layers cost ~1.3x a 1-row one without, ~1.0x with; a prefetch past the end of W
   is a hint and never faults). */
#define PREFETCH_ROWS 4

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* R W rows (1 or 2) starting at row o, MG x rows starting at row m. */
#define KERNEL(MG, R)                                                                                              \
    static void k_##MG##_##R(const float *x, int I, const float *W, int O, const float *b, float *y, int m,       \
                             int o) {                                                                              \
        __m256 acc[MG][R];                                                                                         \
        for (int j = 0; j < MG; j++)                                                                               \
            for (int r = 0; r < R; r++) acc[j][r] = _mm256_setzero_ps();                                           \
        const float *w[R];                                                                                         \
        for (int r = 0; r < R; r++) w[r] = W + (size_t)(o + r) * I;                                                \
        int i = 0;                                                                                                 \
        for (; i + 8 <= I; i += 8) {                                                                               \
            __m256 wv[R];                                                                                          \
            for (int r = 0; r < R; r++) {                                                                          \
                wv[r] = _mm256_loadu_ps(w[r] + i);                                                                 \
                _mm_prefetch((const char *)(w[r] + i + PREFETCH_ROWS * I), _MM_HINT_T0);                          \
            }                                                                                                      \
            for (int j = 0; j < MG; j++) {                                                                         \
                __m256 xv = _mm256_loadu_ps(x + (size_t)(m + j) * I + i);                                          \
                for (int r = 0; r < R; r++) acc[j][r] = _mm256_fmadd_ps(wv[r], xv, acc[j][r]);                     \
            }                                                                                                      \
        }                                                                                                          \
        for (int j = 0; j < MG; j++)                                                                               \
            for (int r = 0; r < R; r++) {                                                                          \
                const float *xr = x + (size_t)(m + j) * I;                                                         \
                float s = hsum(acc[j][r]);                                                                         \
                for (int t = i; t < I; t++) s += w[r][t] * xr[t];                                                  \
                y[(size_t)(m + j) * O + o + r] = s + (b ? b[o + r] : 0.0f);                                        \
            }                                                                                                      \
    }

KERNEL(1, 1) KERNEL(2, 1) KERNEL(3, 1) KERNEL(4, 1) KERNEL(5, 1) KERNEL(6, 1)
KERNEL(1, 2) KERNEL(2, 2) KERNEL(3, 2) KERNEL(4, 2) KERNEL(5, 2) KERNEL(6, 2)

typedef void (*kernel)(const float *, int, const float *, int, const float *, float *, int, int);
static const kernel K[2][6] = {{k_1_1, k_2_1, k_3_1, k_4_1, k_5_1, k_6_1}, {k_1_2, k_2_2, k_3_2, k_4_2, k_5_2, k_6_2}};

void dsd_linear_rows(const float *x, int M, int I, const float *W, int O, const float *b, float *y) {
    for (int o = 0; o < O;) {
        int r = O - o >= 2 ? 2 : 1; /* W rows two at a time, an odd last one alone */
        for (int m = 0; m < M; m += 6) {
            int mg = M - m < 6 ? M - m : 6;
            K[r - 1][mg - 1](x, I, W, O, b, y, m, o);
        }
        o += r;
    }
}
