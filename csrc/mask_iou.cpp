// Fused SAM logits -> mask -> IoU counts on the CPU (see mask_iou.h for the contract).
//
// Both bilinear resizes are separable and each output value needs at most 2 x 2 inputs, so per
// mask we stream over output rows and keep only a few rows in flight (per thread, reused):
//
//   low-res row ly --(horizontal, first resize, composed with the column map of the second)-->
//       G_a[ly][X] = frame(ly-row)[c0(X)],  G_b[ly][X] = frame(ly-row)[c1(X)]       (W floats each)
//   frame row fy  = lerp_y(G[ly0], G[ly1])  at the columns c0(X), c1(X) only
//   H_row[fy][X]  = lerp_x(frame[fy][c0(X)], frame[fy][c1(X)])                      (W floats)
//   output row Y  = lerp_y(H_row[fy0], H_row[fy1])  -> > threshold -> AND / OR gt -> counts
//
// Every value is computed with the same operands, in the same order, as aten's CPU
// upsample_bilinear2d (UpSampleKernel.cpp, InterpolateNonSeparable<.., 2>): per input row the
// horizontal lerp `t = v0 * w0 + v1 * w1`, then the vertical `t0 * h0 + t1 * h1`; torch's
// AVX2/AVX-512 builds contract `x * a + y * b` to fma(x, a, y * b), which we reproduce with an
// explicit fma in the `fused` variant. Not bit-identical in general: aten takes other code paths
// for some shapes (constant logits 0.1 at 20 x 30: torch gives 0.1 + 2 ulp at 53 pixels, we give
// 0.1), so the contract is equal masks except within samr1.ops.near_threshold_eps of the threshold.
// Only the gather of a low-res row (256 floats, L1-resident) is indexed; every other loop is
// contiguous and vectorises.
#include "mask_iou.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define SAMR1_X86 1
#include <immintrin.h>
#endif

#if defined(__GNUC__)
#define SAMR1_INLINE inline __attribute__((always_inline))
#else
#define SAMR1_INLINE inline
#endif

namespace samr1 {
namespace {

template <bool kFused>
SAMR1_INLINE float lerp2(float v0, float w0, float v1, float w1) {
  if constexpr (kFused) {
    return __builtin_fmaf(v0, w0, v1 * w1);
  } else {
    return v0 * w0 + v1 * w1;
  }
}

// A two-slot row cache keyed by row index. Rows are requested in non-decreasing order inside a
// block, so keeping the pair (r, r + 1) and evicting the older one computes every row once.
struct RowCache {
  int64_t tag[2] = {-1, -1};
  SAMR1_INLINE int find(int64_t r) const { return tag[0] == r ? 0 : (tag[1] == r ? 1 : -1); }
  SAMR1_INLINE int victim(int64_t keep) const {
    if (tag[0] == keep) return 1;
    if (tag[1] == keep) return 0;
    return tag[0] <= tag[1] ? 0 : 1;
  }
};

struct PlanView {
  const int32_t *r2i0, *r2i1, *r1i0, *r1i1, *ca0, *ca1, *cb0, *cb1;
  const float *r2w0, *r2w1, *r1w0, *r1w1, *ua0, *ua1, *ub0, *ub1, *vx0, *vx1;
  const uint8_t* gt;
  int64_t H, W, ih;
};

PlanView view(const ImagePlan& p) {
  PlanView v;
  const int64_t H = p.H, W = p.W, ih = p.ih;
  v.r2i0 = p.idx;
  v.r2i1 = v.r2i0 + H;
  v.r1i0 = v.r2i1 + H;
  v.r1i1 = v.r1i0 + ih;
  v.ca0 = v.r1i1 + ih;
  v.ca1 = v.ca0 + W;
  v.cb0 = v.ca1 + W;
  v.cb1 = v.cb0 + W;
  v.r2w0 = p.wts;
  v.r2w1 = v.r2w0 + H;
  v.r1w0 = v.r2w1 + H;
  v.r1w1 = v.r1w0 + ih;
  v.ua0 = v.r1w1 + ih;
  v.ua1 = v.ua0 + W;
  v.ub0 = v.ua1 + W;
  v.ub1 = v.ub0 + W;
  v.vx0 = v.ub1 + W;
  v.vx1 = v.vx0 + W;
  v.gt = p.gt;
  v.H = H;
  v.W = W;
  v.ih = ih;
  return v;
}

// One G row: out[x] = row[i0[x]] * w0[x] + row[i1[x]] * w1[x] (x < W), the first resize's
// horizontal lerp of low-res row `row` (lw floats) at the frame columns of the output columns.
// This is the only indexed access; profiling showed the scalar loop at ~60% of the time (GCC does
// not vectorise it), so the x86 variants below use a window load + permute when the 16 (8) indices
// of a chunk fall in 16 (8) consecutive floats (always, except strong downscaling), else a gather.
// The plan's column indices are non-decreasing with i0 <= i1 (checked in the binding), so a chunk's
// smallest index is i0[x] and its largest i1[x + lanes - 1].
template <bool kFused>
SAMR1_INLINE void g_row_scalar(const float* __restrict row, const int32_t* __restrict i0,
                               const int32_t* __restrict i1, const float* __restrict w0,
                               const float* __restrict w1, float* __restrict out, int64_t x,
                               int64_t W) {
  for (; x < W; ++x) out[x] = lerp2<kFused>(row[i0[x]], w0[x], row[i1[x]], w1[x]);
}

#ifdef SAMR1_X86
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))) void g_row_avx512(
    const float* __restrict row, int64_t lw, const int32_t* __restrict i0,
    const int32_t* __restrict i1, const float* __restrict w0, const float* __restrict w1,
    float* __restrict out, int64_t W) {
  int64_t x = 0;
  for (; x + 16 <= W; x += 16) {
    const __m512i a = _mm512_loadu_si512(i0 + x);
    const __m512i b = _mm512_loadu_si512(i1 + x);
    const int32_t lo = i0[x], hi = i1[x + 15];
    __m512 v0, v1;
    if (hi - lo < 16 && lw >= 16) {
      const int32_t base = int32_t(std::min<int64_t>(lo, lw - 16));
      const __m512 win = _mm512_loadu_ps(row + base);
      const __m512i vb = _mm512_set1_epi32(base);
      v0 = _mm512_maskz_permutexvar_ps(__mmask16(0xFFFF), _mm512_sub_epi32(a, vb), win);
      v1 = _mm512_maskz_permutexvar_ps(__mmask16(0xFFFF), _mm512_sub_epi32(b, vb), win);
    } else {
      // masked forms: same instructions, and GCC 12 does not warn about an undefined source
      v0 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), __mmask16(0xFFFF), a, row, 4);
      v1 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), __mmask16(0xFFFF), b, row, 4);
    }
    const __m512 r =
        _mm512_fmadd_ps(v0, _mm512_loadu_ps(w0 + x), _mm512_mul_ps(v1, _mm512_loadu_ps(w1 + x)));
    _mm512_storeu_ps(out + x, r);
  }
  g_row_scalar<true>(row, i0, i1, w0, w1, out, x, W);
}

__attribute__((target("avx2,fma"))) void g_row_avx2(const float* __restrict row, int64_t lw,
                                                   const int32_t* __restrict i0,
                                                   const int32_t* __restrict i1,
                                                   const float* __restrict w0,
                                                   const float* __restrict w1,
                                                   float* __restrict out, int64_t W) {
  int64_t x = 0;
  for (; x + 8 <= W; x += 8) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i0 + x));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i1 + x));
    const int32_t lo = i0[x], hi = i1[x + 7];
    __m256 v0, v1;
    if (hi - lo < 8 && lw >= 8) {
      const int32_t base = int32_t(std::min<int64_t>(lo, lw - 8));
      const __m256 win = _mm256_loadu_ps(row + base);
      const __m256i vb = _mm256_set1_epi32(base);
      v0 = _mm256_permutevar8x32_ps(win, _mm256_sub_epi32(a, vb));
      v1 = _mm256_permutevar8x32_ps(win, _mm256_sub_epi32(b, vb));
    } else {
      v0 = _mm256_i32gather_ps(row, a, 4);
      v1 = _mm256_i32gather_ps(row, b, 4);
    }
    const __m256 r =
        _mm256_fmadd_ps(v0, _mm256_loadu_ps(w0 + x), _mm256_mul_ps(v1, _mm256_loadu_ps(w1 + x)));
    _mm256_storeu_ps(out + x, r);
  }
  g_row_scalar<true>(row, i0, i1, w0, w1, out, x, W);
}
#endif

// One output row: v = h0[x] * w0 + h1[x] * w1 (second resize, vertical), pred = v > thr, and the
// row's |pred AND gt|, |pred OR gt| added to *ci, *cu. The x86 variants count with compare masks +
// popcount: profiling the auto-vectorised loop showed ~25% of the time in widening the uint8 ground
// truth to int32 lanes.
template <bool kFused>
SAMR1_INLINE void count_row_scalar(const float* __restrict h0, const float* __restrict h1, float w0,
                                   float w1, const uint8_t* __restrict g, float thr, int64_t x,
                                   int64_t W, int64_t* ci, int64_t* cu) {
  int32_t ai = 0, au = 0;  // W < 2^31: one row cannot overflow
  for (; x < W; ++x) {
    const float v = lerp2<kFused>(h0[x], w0, h1[x], w1);
    const int32_t pr = v > thr;
    const int32_t gg = g[x] != 0;
    ai += pr & gg;
    au += pr | gg;
  }
  *ci += ai;
  *cu += au;
}

#ifdef SAMR1_X86
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,popcnt"))) void count_row_avx512(
    const float* __restrict h0, const float* __restrict h1, float w0, float w1,
    const uint8_t* __restrict g, float thr, int64_t W, int64_t* ci, int64_t* cu) {
  const __m512 vw0 = _mm512_set1_ps(w0), vw1 = _mm512_set1_ps(w1), vt = _mm512_set1_ps(thr);
  int64_t ai = 0, au = 0, x = 0;
  for (; x + 16 <= W; x += 16) {
    const __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(h0 + x), vw0,
                                     _mm512_mul_ps(_mm512_loadu_ps(h1 + x), vw1));
    const unsigned p = _mm512_cmp_ps_mask(v, vt, _CMP_GT_OQ);  // NaN -> false, like `v > thr`
    const __m128i gb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + x));
    const unsigned gm = _mm_test_epi8_mask(gb, gb);
    ai += __builtin_popcount(p & gm);
    au += __builtin_popcount(p | gm);
  }
  *ci += ai;
  *cu += au;
  count_row_scalar<true>(h0, h1, w0, w1, g, thr, x, W, ci, cu);
}

__attribute__((target("avx2,fma,popcnt"))) void count_row_avx2(
    const float* __restrict h0, const float* __restrict h1, float w0, float w1,
    const uint8_t* __restrict g, float thr, int64_t W, int64_t* ci, int64_t* cu) {
  const __m256 vw0 = _mm256_set1_ps(w0), vw1 = _mm256_set1_ps(w1), vt = _mm256_set1_ps(thr);
  const __m128i zero = _mm_setzero_si128();
  int64_t ai = 0, au = 0, x = 0;
  for (; x + 8 <= W; x += 8) {
    const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(h0 + x), vw0,
                                     _mm256_mul_ps(_mm256_loadu_ps(h1 + x), vw1));
    const unsigned p = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(v, vt, _CMP_GT_OQ)));
    const __m128i gb = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(g + x));
    const unsigned gm = ~unsigned(_mm_movemask_epi8(_mm_cmpeq_epi8(gb, zero))) & 0xFFu;
    ai += __builtin_popcount(p & gm);
    au += __builtin_popcount(p | gm);
  }
  *ci += ai;
  *cu += au;
  count_row_scalar<true>(h0, h1, w0, w1, g, thr, x, W, ci, cu);
}
#endif

enum class Isa { kPlain, kAvx2, kAvx512 };

// Output rows [y_begin, y_end) of one mask. `scratch` holds 6 * W floats (2 G slots of 2 rows,
// 2 H_row slots). Adds the counts of these rows to *inter / *uni. Member functions are
// always_inline (no lambdas) so that everything is compiled inside the ISA-specific wrappers
// below with their target attributes.
template <bool kFused, Isa kIsa>
struct Block {
  const float* __restrict L;
  int64_t lw;
  const PlanView& p;
  float* g[2][2];
  float* hr[2];
  RowCache gc, hc;

  SAMR1_INLINE Block(const float* L_, int64_t lw_, const PlanView& p_, float* scratch)
      : L(L_), lw(lw_), p(p_) {
    const int64_t W = p.W;
    g[0][0] = scratch;
    g[0][1] = scratch + W;
    g[1][0] = scratch + 2 * W;
    g[1][1] = scratch + 3 * W;
    hr[0] = scratch + 4 * W;
    hr[1] = scratch + 5 * W;
  }

  // G rows of low-res row ly: the first resize's horizontal lerp at frame columns c0(x), c1(x).
  SAMR1_INLINE int get_g(int64_t ly, int64_t keep) {
    int s = gc.find(ly);
    if (s >= 0) return s;
    s = gc.victim(keep);
    const int64_t W = p.W;
    const float* __restrict row = L + ly * lw;
    float* __restrict ga = g[s][0];
    float* __restrict gb = g[s][1];
#ifdef SAMR1_X86
    if constexpr (kIsa == Isa::kAvx512) {
      g_row_avx512(row, lw, p.ca0, p.ca1, p.ua0, p.ua1, ga, W);
      g_row_avx512(row, lw, p.cb0, p.cb1, p.ub0, p.ub1, gb, W);
    } else if constexpr (kIsa == Isa::kAvx2) {
      g_row_avx2(row, lw, p.ca0, p.ca1, p.ua0, p.ua1, ga, W);
      g_row_avx2(row, lw, p.cb0, p.cb1, p.ub0, p.ub1, gb, W);
    } else
#endif
    {
      g_row_scalar<kFused>(row, p.ca0, p.ca1, p.ua0, p.ua1, ga, 0, W);
      g_row_scalar<kFused>(row, p.cb0, p.cb1, p.ub0, p.ub1, gb, 0, W);
    }
    gc.tag[s] = ly;
    return s;
  }

  // H row of frame row fy: the first resize's vertical lerp, then the second's horizontal one.
  SAMR1_INLINE int get_h(int64_t fy, int64_t keep) {
    int s = hc.find(fy);
    if (s >= 0) return s;
    s = hc.victim(keep);
    const int64_t W = p.W;
    const int64_t ly0 = p.r1i0[fy], ly1 = p.r1i1[fy];
    const int s0 = get_g(ly0, -2);
    const int s1 = get_g(ly1, ly0);
    const float w0 = p.r1w0[fy], w1 = p.r1w1[fy];
    const float* __restrict a0 = g[s0][0];
    const float* __restrict a1 = g[s1][0];
    const float* __restrict b0 = g[s0][1];
    const float* __restrict b1 = g[s1][1];
    const float* __restrict vx0 = p.vx0;
    const float* __restrict vx1 = p.vx1;
    float* __restrict out = hr[s];
    for (int64_t x = 0; x < W; ++x) {
      const float f0 = lerp2<kFused>(a0[x], w0, a1[x], w1);  // frame[fy][c0(x)]
      const float f1 = lerp2<kFused>(b0[x], w0, b1[x], w1);  // frame[fy][c1(x)]
      out[x] = lerp2<kFused>(f0, vx0[x], f1, vx1[x]);
    }
    hc.tag[s] = fy;
    return s;
  }

  SAMR1_INLINE void run(int64_t y_begin, int64_t y_end, float thr, int64_t* inter, int64_t* uni) {
    const int64_t W = p.W;
    int64_t acc_i = 0, acc_u = 0;
    for (int64_t y = y_begin; y < y_end; ++y) {
      const int64_t fy0 = p.r2i0[y], fy1 = p.r2i1[y];
      const int s0 = get_h(fy0, -2);
      const int s1 = get_h(fy1, fy0);
      const float w0 = p.r2w0[y], w1 = p.r2w1[y];
      const float* __restrict h0 = hr[s0];
      const float* __restrict h1 = hr[s1];
      const uint8_t* grow = p.gt + y * W;
#ifdef SAMR1_X86
      if constexpr (kIsa == Isa::kAvx512) {
        count_row_avx512(h0, h1, w0, w1, grow, thr, W, &acc_i, &acc_u);
      } else if constexpr (kIsa == Isa::kAvx2) {
        count_row_avx2(h0, h1, w0, w1, grow, thr, W, &acc_i, &acc_u);
      } else
#endif
      {
        count_row_scalar<kFused>(h0, h1, w0, w1, grow, thr, 0, W, &acc_i, &acc_u);
      }
    }
    *inter += acc_i;
    *uni += acc_u;
  }
};

template <bool kFused, Isa kIsa>
SAMR1_INLINE void block_impl(const float* L, int64_t lw, const PlanView& p, int64_t y_begin,
                             int64_t y_end, float thr, float* scratch, int64_t* inter,
                             int64_t* uni) {
  Block<kFused, kIsa> blk(L, lw, p, scratch);
  blk.run(y_begin, y_end, thr, inter, uni);
}

using BlockFn = void (*)(const float*, int64_t, const PlanView&, int64_t, int64_t, float, float*,
                         int64_t*, int64_t*);

void block_plain(const float* L, int64_t lw, const PlanView& p, int64_t y0, int64_t y1, float thr,
                 float* scratch, int64_t* inter, int64_t* uni) {
  block_impl<false, Isa::kPlain>(L, lw, p, y0, y1, thr, scratch, inter, uni);
}

#ifdef SAMR1_X86
// The same code compiled for AVX2+FMA and for AVX-512 (chosen at run time, like aten's own
// CPU-capability dispatch), so the wheel still runs on any x86-64.
__attribute__((target("avx2,fma"))) void block_fma_avx2(const float* L, int64_t lw,
                                                       const PlanView& p, int64_t y0, int64_t y1,
                                                       float thr, float* scratch, int64_t* inter,
                                                       int64_t* uni) {
  block_impl<true, Isa::kAvx2>(L, lw, p, y0, y1, thr, scratch, inter, uni);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512"))) void
block_fma_avx512(const float* L, int64_t lw, const PlanView& p, int64_t y0, int64_t y1, float thr,
                 float* scratch, int64_t* inter, int64_t* uni) {
  block_impl<true, Isa::kAvx512>(L, lw, p, y0, y1, thr, scratch, inter, uni);
}
#else
void block_fma_native(const float* L, int64_t lw, const PlanView& p, int64_t y0, int64_t y1,
                      float thr, float* scratch, int64_t* inter, int64_t* uni) {
  block_impl<true, Isa::kPlain>(L, lw, p, y0, y1, thr, scratch, inter, uni);
}
#endif

// isa: 0 = best available, 1 = AVX2 (tests force it to cover that variant on AVX-512 machines).
BlockFn pick(bool fused, int isa) {
  if (!fused) return block_plain;
#ifdef SAMR1_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  if (avx512 && isa == 0) return block_fma_avx512;
  if (avx2) return block_fma_avx2;
  throw std::invalid_argument("mask_iou: fused=True needs a CPU with AVX2+FMA");
#else
  (void)isa;
  return block_fma_native;
#endif
}

// Rows per work item: large enough that the 1-2 recomputed boundary rows are cheap, small enough
// that a few masks still split over the threads.
int64_t rows_per_item(int64_t total_rows, int threads) {
  const int64_t target_items = int64_t(8) * std::max(threads, 1);
  int64_t r = 64;
  if (total_rows < target_items * r) r = std::max<int64_t>(8, total_rows / target_items);
  return r;
}

// Threads worth waking: one per ~16M units of work (a unit ~ one output pixel or one H-row value,
// ~0.15 ns single-threaded with AVX-512, so ~2.5 ms). Every OpenMP region ends in a barrier that waits
// until each woken thread has been scheduled at least once; on the shared 2-core box under load that
// costs a scheduler time slice. Measured there (load ~4): N=8 at 480x640 (10M units) took 1.8 ms on
// one thread and 12-18 ms on two; N=1 at 1080x1920: 1.1 ms vs 12-17 ms. Above the threshold it is
// no better there under libgomp's default (spinning) wait policy: bench_mask_iou --omp, 2 threads vs 1,
// 0.01-0.84x at load 9-12 and 0.13-1.17x at load ~2.5, up to 17x the CPU time; with
// OMP_WAIT_POLICY=passive calls of 10M+ units gain 1.56-1.81x. So the Python side asks for one thread unless
// that policy or SAMR1_CPP_THREADS says otherwise (samr1/_ext.py, bench/RESULTS.md).
// `per_thread` < 0 takes kDefaultWorkPerThread, 0 wakes every thread asked for (benches sweep it).
int useful_threads(int64_t work, int threads, int64_t per_thread) {
  if (per_thread < 0) per_thread = kDefaultWorkPerThread;
  if (per_thread == 0) return std::max(threads, 1);
  return int(std::max<int64_t>(1, std::min<int64_t>(threads, work / per_thread)));
}

}  // namespace

bool mask_iou_fma_supported() {
#ifdef SAMR1_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return true;
#endif
}

void mask_iou_counts(const float* logits, int64_t N, int64_t lh, int64_t lw,
                     const int64_t* image_index, const ImagePlan* plans, int64_t n_images,
                     float threshold, bool fused, int num_threads, int64_t* inter, int64_t* uni,
                     int isa, int64_t work_per_thread) {
  const BlockFn fn = pick(fused, isa);
  std::vector<PlanView> views(n_images);
  int64_t max_w = 1, total_rows = 0;
  for (int64_t b = 0; b < n_images; ++b) {
    views[b] = view(plans[b]);
    max_w = std::max(max_w, plans[b].W);
  }
  int64_t work = 0;
  for (int64_t m = 0; m < N; ++m) {
    const ImagePlan& p = plans[image_index ? image_index[m] : 0];
    total_rows += p.H;
    work += p.W * (p.H + 2 * std::min(p.ih, 2 * p.H));  // output pixels + H-row values
  }
#ifdef _OPENMP
  const int threads =
      useful_threads(work, num_threads > 0 ? num_threads : omp_get_max_threads(), work_per_thread);
#else
  (void)work_per_thread;
  const int threads = 1;
#endif
  const int64_t R = rows_per_item(total_rows, threads);
  // Work items (mask, first row): allocated once per call, never per pixel.
  std::vector<int64_t> item_mask, item_row;
  for (int64_t m = 0; m < N; ++m) {
    const int64_t H = plans[image_index ? image_index[m] : 0].H;
    for (int64_t y = 0; y < H; y += R) {
      item_mask.push_back(m);
      item_row.push_back(y);
    }
  }
  const int64_t n_items = int64_t(item_mask.size());
  std::vector<int64_t> part(2 * n_items, 0);
  const int64_t plane = lh * lw;

#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch(6 * max_w);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; ++it) {
      const int64_t m = item_mask[it];
      const PlanView& p = views[image_index ? image_index[m] : 0];
      const int64_t y0 = item_row[it];
      const int64_t y1 = std::min(p.H, y0 + R);
      fn(logits + m * plane, lw, p, y0, y1, threshold, scratch.data(), &part[2 * it],
         &part[2 * it + 1]);
    }
  }
  // Sum in item order: deterministic whatever the schedule.
  std::fill(inter, inter + N, 0);
  std::fill(uni, uni + N, 0);
  for (int64_t it = 0; it < n_items; ++it) {
    inter[item_mask[it]] += part[2 * it];
    uni[item_mask[it]] += part[2 * it + 1];
  }
}

// ---------------------------------------------------------------------------------------------
// Python binding (numpy arrays in, zero-copy; the GIL is released while the kernel runs).

namespace py = pybind11;

namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

void check(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument("samr1._C.mask_iou_counts: " + msg);
}

template <typename T>
void check_range(const T* v, int64_t n, int64_t hi, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    check(v[i] >= 0 && int64_t(v[i]) < hi,
          std::string(what) + " index out of range (plan does not match the shapes)");
}

// The G-row kernels assume each column pair (i0, i1) is non-decreasing with i0 <= i1.
void check_columns(const int32_t* c, int64_t W) {
  for (int k = 0; k < 2; ++k) {
    const int32_t* i0 = c + 2 * k * W;
    const int32_t* i1 = i0 + W;
    for (int64_t x = 0; x < W; ++x) {
      check(i0[x] <= i1[x], "column plan must have i0 <= i1");
      check(x == 0 || (i0[x] >= i0[x - 1] && i1[x] >= i1[x - 1]),
            "column plan must be non-decreasing");
    }
  }
}

py::tuple mask_iou_counts_py(const carray<float>& logits, const carray<int64_t>& image_index,
                             const py::list& plans, float threshold, bool fused, int num_threads,
                             const std::string& isa, int64_t work_per_thread) {
  check(isa == "auto" || isa == "avx2", "isa must be 'auto' or 'avx2'");
  check(logits.ndim() == 3, "logits must be N x h x w float32");
  const int64_t N = logits.shape(0), lh = logits.shape(1), lw = logits.shape(2);
  const int64_t B = int64_t(py::len(plans));
  check(B >= 1, "need at least one image plan");
  const bool has_index = image_index.size() > 0;
  check(!has_index || (image_index.ndim() == 1 && image_index.shape(0) == N),
        "image_index must have N entries (or be empty when there is one image)");
  check(has_index || B == 1, "image_index is required with several images");
  if (has_index) check_range(image_index.data(), N, B, "image_index");

  std::vector<ImagePlan> cplans(B);
  std::vector<py::object> keep;  // the arrays stay referenced by `plans` for the whole call
  for (int64_t b = 0; b < B; ++b) {
    auto t = plans[b].cast<py::tuple>();
    check(t.size() == 4, "each plan is (idx int32, wts float32, gt uint8 H x W, ih)");
    auto idx = t[0].cast<carray<int32_t>>();
    auto wts = t[1].cast<carray<float>>();
    auto gt = t[2].cast<carray<uint8_t>>();
    const int64_t ih = t[3].cast<int64_t>();
    check(gt.ndim() == 2, "gt must be a 2-D uint8 array");
    const int64_t H = gt.shape(0), W = gt.shape(1);
    check(H > 0 && W > 0 && ih > 0, "empty plan");
    check(idx.ndim() == 1 && idx.shape(0) == 2 * H + 2 * ih + 4 * W, "idx has the wrong length");
    check(wts.ndim() == 1 && wts.shape(0) == 2 * H + 2 * ih + 6 * W, "wts has the wrong length");
    const int32_t* ip = idx.data();
    check_range(ip, 2 * H, ih, "frame row");
    check_range(ip + 2 * H, 2 * ih, lh, "low-res row");
    check_range(ip + 2 * H + 2 * ih, 4 * W, lw, "low-res column");
    check_columns(ip + 2 * H + 2 * ih, W);
    cplans[b] = ImagePlan{ip, wts.data(), gt.data(), H, W, ih};
    keep.push_back(idx);
    keep.push_back(wts);
    keep.push_back(gt);
  }
  carray<int64_t> inter(N), uni(N);
  int64_t* pi = inter.mutable_data();
  int64_t* pu = uni.mutable_data();
  const float* pl = logits.data();
  const int64_t* pidx = has_index ? image_index.data() : nullptr;
  {
    py::gil_scoped_release release;
    mask_iou_counts(pl, N, lh, lw, pidx, cplans.data(), B, threshold, fused, num_threads, pi, pu,
                    isa == "avx2" ? 1 : 0, work_per_thread);
  }
  return py::make_tuple(inter, uni);
}

}  // namespace

void bind_mask_iou(py::module_& m) {
  m.def("mask_iou_counts", &mask_iou_counts_py, py::arg("logits").noconvert(),
        py::arg("image_index").noconvert(), py::arg("plans"), py::arg("threshold"),
        py::arg("fused"), py::arg("num_threads") = 0, py::arg("isa") = "auto",
        py::arg("work_per_thread") = -1,
        "Intersection and union counts (int64 N each) of SAM-postprocessed masks vs gt.\n"
        "logits: N x h x w float32 C-contiguous; image_index: int64 (N,) or empty; plans: list of\n"
        "(idx int32, wts float32, gt uint8 H x W, ih) from samr1.ops.mask_iou.image_plan.\n"
        "fused: fma arithmetic like torch's AVX2/AVX-512 kernels; num_threads <= 0: OpenMP default;\n"
        "isa: 'auto' (best variant for this CPU) or 'avx2' (force the AVX2 variant, for tests).\n"
        "work_per_thread: units of work (output pixels + H-row values) per woken thread; -1: the\n"
        "built-in default (work_per_thread_default()), 0: wake all num_threads (benches).");
  m.def("work_per_thread_default", [] { return kDefaultWorkPerThread; },
        "Units of work per woken OpenMP thread by default (below it a call runs on one thread).");
  m.def("mask_iou_fma_supported", &mask_iou_fma_supported,
        "True when the fused-multiply-add variant can run on this CPU.");
}

}  // namespace samr1
