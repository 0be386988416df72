// Row-block machinery shared by the fused mask-IoU kernels (mask_iou.cpp: SAM, mask_iou_sam2.cpp: SAM 2).
//
// Both ops reduce to the same three pieces: a two-tap horizontal lerp gathered from a low-res logit row
// (g_row_*), a two-tap vertical lerp of two cached rows that is thresholded and counted against a
// ground-truth row without being stored (count_row_*), and OpenMP over (mask, block of output rows)
// with per-item partial counts summed in item order (run_row_blocks). Everything is inline: each op's
// .cpp instantiates it inside its own ISA-specific wrappers (target attributes), like aten's
// CPU-capability dispatch, so the extension still runs on any x86-64.
#pragma once

#include <algorithm>
#include <cstdint>
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
namespace rows {

// Units of work (one output pixel or one intermediate row value) per woken OpenMP thread by default:
// a call below it runs on one thread (see useful_threads for the measurement).
constexpr int64_t kDefaultWorkPerThread = int64_t(16) << 20;

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

// One gathered row: out[x] = row[i0[x]] * w0[x] + row[i1[x]] * w1[x] (x < W), a horizontal lerp of
// the low-res row `row` (lw floats) at the source columns of W output columns (SAM: mask_iou.cpp's G
// rows; SAM 2: the x resize). This is the only indexed access; profiling showed the scalar loop at ~60% of the time (GCC does
// not vectorise it), so the x86 variants below use a window load + permute when the 16 (8) indices
// of a chunk fall in 16 (8) consecutive floats (always, except strong downscaling), else a gather.
// The plan's column indices are non-decreasing with i0 <= i1 (check_columns, in each binding), so a chunk's
// smallest index is i0[x] and its largest i1[x + lanes - 1].
template <bool kFused>
SAMR1_INLINE void g_row_scalar(const float* __restrict row, const int32_t* __restrict i0,
                               const int32_t* __restrict i1, const float* __restrict w0,
                               const float* __restrict w1, float* __restrict out, int64_t x,
                               int64_t W) {
  for (; x < W; ++x) out[x] = lerp2<kFused>(row[i0[x]], w0[x], row[i1[x]], w1[x]);
}

#ifdef SAMR1_X86
inline __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))) void g_row_avx512(
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

inline __attribute__((target("avx2,fma"))) void g_row_avx2(const float* __restrict row, int64_t lw,
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

// One output row: v = h0[x] * w0 + h1[x] * w1 (the last vertical lerp), pred = v > thr, and the
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
inline __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,popcnt"))) void count_row_avx512(
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

inline __attribute__((target("avx2,fma,popcnt"))) void count_row_avx2(
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

// The instruction set of the fused-multiply-add variant: the best one this CPU has (isa 0), or AVX2
// (isa 1: tests force it to cover that variant on AVX-512 machines). kPlain off x86, where FMA is
// part of the base ISA (aarch64) and the generic build computes lerp2<true> with fma.
inline Isa fused_isa(int isa, const char* op) {
#ifdef SAMR1_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  if (avx512 && isa == 0) return Isa::kAvx512;
  if (avx2) return Isa::kAvx2;
  throw std::invalid_argument(std::string(op) + ": fused=True needs a CPU with AVX2+FMA");
#else
  (void)isa;
  (void)op;
  return Isa::kPlain;
#endif
}

// True when this build + CPU can run the fused-multiply-add variant (x86: AVX2+FMA at run time).
inline bool fma_supported() {
#ifdef SAMR1_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return true;
#endif
}

// Row kernels of one ISA behind one name, so that a kernel's row loop is written once.
template <bool kFused, Isa kIsa>
SAMR1_INLINE void gather_row(const float* row, int64_t lw, const int32_t* i0, const int32_t* i1,
                             const float* w0, const float* w1, float* out, int64_t W) {
#ifdef SAMR1_X86
  if constexpr (kIsa == Isa::kAvx512) {
    g_row_avx512(row, lw, i0, i1, w0, w1, out, W);
    return;
  } else if constexpr (kIsa == Isa::kAvx2) {
    g_row_avx2(row, lw, i0, i1, w0, w1, out, W);
    return;
  }
#endif
  (void)lw;
  g_row_scalar<kFused>(row, i0, i1, w0, w1, out, 0, W);
}

template <bool kFused, Isa kIsa>
SAMR1_INLINE void count_row(const float* h0, const float* h1, float w0, float w1, const uint8_t* g,
                            float thr, int64_t W, int64_t* ci, int64_t* cu) {
#ifdef SAMR1_X86
  if constexpr (kIsa == Isa::kAvx512) {
    count_row_avx512(h0, h1, w0, w1, g, thr, W, ci, cu);
    return;
  } else if constexpr (kIsa == Isa::kAvx2) {
    count_row_avx2(h0, h1, w0, w1, g, thr, W, ci, cu);
    return;
  }
#endif
  count_row_scalar<kFused>(h0, h1, w0, w1, g, thr, 0, W, ci, cu);
}


// Rows per work item: large enough that the 1-2 recomputed boundary rows are cheap, small enough
// that a few masks still split over the threads.
inline int64_t rows_per_item(int64_t total_rows, int threads) {
  const int64_t target_items = int64_t(8) * std::max(threads, 1);
  int64_t r = 64;
  if (total_rows < target_items * r) r = std::max<int64_t>(8, total_rows / target_items);
  return r;
}

// Threads worth waking: one per ~16M units of work (a unit ~ one output pixel or one intermediate
// row value (mask_iou.cpp: H rows; mask_iou_sam2.cpp: x-resized rows),
// ~0.15 ns single-threaded with AVX-512, so ~2.5 ms). Every OpenMP region ends in a barrier that waits
// until each woken thread has been scheduled at least once; on the shared 2-core box under load that
// costs a scheduler time slice. Measured there (load ~4): N=8 at 480x640 (10M units) took 1.8 ms on
// one thread and 12-18 ms on two; N=1 at 1080x1920: 1.1 ms vs 12-17 ms. Above the threshold it is
// no better there under libgomp's default (spinning) wait policy: bench_mask_iou --omp, 2 threads vs 1,
// 0.01-0.84x at load 9-12 and 0.13-1.17x at load ~2.5, up to 17x the CPU time; with
// OMP_WAIT_POLICY=passive calls of 10M+ units gain 1.56-1.81x. So the Python side asks for one thread unless
// that policy or SAMR1_CPP_THREADS says otherwise (samr1.ops.backends.cpp_threads, bench/RESULTS.md).
// `per_thread` < 0 takes kDefaultWorkPerThread, 0 wakes every thread asked for (benches sweep it).
inline int useful_threads(int64_t work, int threads, int64_t per_thread) {
  if (per_thread < 0) per_thread = kDefaultWorkPerThread;
  if (per_thread == 0) return std::max(threads, 1);
  return int(std::max<int64_t>(1, std::min<int64_t>(threads, work / per_thread)));
}

// OpenMP threads for a call of `work` units: `num_threads` (<= 0: the OpenMP default) capped by
// useful_threads; 1 without OpenMP.
inline int call_threads(int64_t work, int num_threads, int64_t work_per_thread) {
#ifdef _OPENMP
  return useful_threads(work, num_threads > 0 ? num_threads : omp_get_max_threads(), work_per_thread);
#else
  (void)work;
  (void)num_threads;
  (void)work_per_thread;
  return 1;
#endif
}

// Runs block(m, y_begin, y_end, scratch, &inter_part, &uni_part) for every (mask m < N, block of its
// output rows) on `threads` OpenMP threads, each thread with its own `scratch_floats` floats (allocated
// once per thread, never per pixel), and writes inter[m], uni[m]: the parts summed in item order, so the
// result is deterministic whatever the schedule. height(m) is the number of output rows of mask m.
template <typename Height, typename Body>
void run_row_blocks(int64_t N, Height height, int threads, int64_t scratch_floats, Body block,
                    int64_t* inter, int64_t* uni) {
  int64_t total_rows = 0;
  for (int64_t m = 0; m < N; ++m) total_rows += height(m);
  const int64_t R = rows_per_item(total_rows, threads);
  std::vector<int64_t> item_mask, item_row;
  for (int64_t m = 0; m < N; ++m) {
    const int64_t H = height(m);
    for (int64_t y = 0; y < H; y += R) {
      item_mask.push_back(m);
      item_row.push_back(y);
    }
  }
  const int64_t n_items = int64_t(item_mask.size());
  std::vector<int64_t> part(2 * n_items, 0);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch(std::max<int64_t>(scratch_floats, 1));
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; ++it) {
      const int64_t m = item_mask[it];
      const int64_t y0 = item_row[it];
      block(m, y0, std::min(height(m), y0 + R), scratch.data(), &part[2 * it], &part[2 * it + 1]);
    }
  }
  std::fill(inter, inter + N, 0);
  std::fill(uni, uni + N, 0);
  for (int64_t it = 0; it < n_items; ++it) {
    inter[item_mask[it]] += part[2 * it];
    uni[item_mask[it]] += part[2 * it + 1];
  }
}

// ------------------------------------------------------------------------ an op's kernel variants
// An op supplies `template <bool kFused, Isa kIsa> struct Block` with Block(L, lw, view, scratch) and
// run(y_begin, y_end, threshold, &inter, &uni) (always_inline members: output rows [y_begin, y_end) of one
// mask, the low-res plane L with lw columns) and a View per image with H and W. The variants below compile
// the same Block for plain arithmetic, AVX2+FMA and AVX-512 (chosen at run time, like aten's own
// CPU-capability dispatch), so the extension still runs on any x86-64.
template <typename View>
using BlockFn = void (*)(const float*, int64_t, const View&, int64_t, int64_t, float, float*, int64_t*,
                         int64_t*);

template <template <bool, Isa> class Block, bool kFused, Isa kIsa, typename View>
SAMR1_INLINE void run_block(const float* L, int64_t lw, const View& p, int64_t y0, int64_t y1,
                            float thr, float* scratch, int64_t* inter, int64_t* uni) {
  Block<kFused, kIsa> blk(L, lw, p, scratch);
  blk.run(y0, y1, thr, inter, uni);
}

template <template <bool, Isa> class Block, typename View>
void block_plain(const float* L, int64_t lw, const View& p, int64_t y0, int64_t y1, float thr,
                 float* scratch, int64_t* inter, int64_t* uni) {
  run_block<Block, false, Isa::kPlain>(L, lw, p, y0, y1, thr, scratch, inter, uni);
}

#ifdef SAMR1_X86
template <template <bool, Isa> class Block, typename View>
__attribute__((target("avx2,fma"))) void block_fma_avx2(const float* L, int64_t lw, const View& p,
                                                       int64_t y0, int64_t y1, float thr,
                                                       float* scratch, int64_t* inter,
                                                       int64_t* uni) {
  run_block<Block, true, Isa::kAvx2>(L, lw, p, y0, y1, thr, scratch, inter, uni);
}

template <template <bool, Isa> class Block, typename View>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512"))) void
block_fma_avx512(const float* L, int64_t lw, const View& p, int64_t y0, int64_t y1, float thr,
                 float* scratch, int64_t* inter, int64_t* uni) {
  run_block<Block, true, Isa::kAvx512>(L, lw, p, y0, y1, thr, scratch, inter, uni);
}
#else
template <template <bool, Isa> class Block, typename View>
void block_fma_native(const float* L, int64_t lw, const View& p, int64_t y0, int64_t y1, float thr,
                      float* scratch, int64_t* inter, int64_t* uni) {
  run_block<Block, true, Isa::kPlain>(L, lw, p, y0, y1, thr, scratch, inter, uni);
}
#endif

// The variant for (fused, isa): isa 0 = best available, 1 = AVX2 (tests).
template <template <bool, Isa> class Block, typename View>
BlockFn<View> pick_block(bool fused, int isa, const char* op) {
  if (!fused) return block_plain<Block, View>;
#ifdef SAMR1_X86
  return fused_isa(isa, op) == Isa::kAvx512 ? block_fma_avx512<Block, View>
                                             : block_fma_avx2<Block, View>;
#else
  (void)fused_isa(isa, op);
  return block_fma_native<Block, View>;
#endif
}

// The whole counts call of an op: N masks of lh x lw logits, mask m scored on views[image_index[m]] (or
// views[0] when image_index is null), `scratch_rows` W-float rows of scratch per thread, OpenMP threads
// from the call's work (work_of(view): units of one mask of that image), every (mask, row block) through
// the op's Block variant for (fused, isa); writes inter[N], uni[N].
template <template <bool, Isa> class Block, typename View, typename Work>
void count_masks(const float* logits, int64_t N, int64_t lh, int64_t lw, const int64_t* image_index,
                 const std::vector<View>& views, int64_t scratch_rows, Work work_of, float threshold,
                 bool fused, int isa, int num_threads, int64_t work_per_thread, const char* op,
                 int64_t* inter, int64_t* uni) {
  const BlockFn<View> fn = pick_block<Block, View>(fused, isa, op);
  auto view_of = [&](int64_t m) -> const View& { return views[image_index ? image_index[m] : 0]; };
  int64_t max_w = 1, work = 0;
  for (const View& v : views) max_w = std::max<int64_t>(max_w, v.W);
  for (int64_t m = 0; m < N; ++m) work += work_of(view_of(m));
  const int threads = call_threads(work, num_threads, work_per_thread);
  const int64_t plane = lh * lw;
  run_row_blocks(
      N, [&](int64_t m) { return view_of(m).H; }, threads, scratch_rows * max_w,
      [&](int64_t m, int64_t y0, int64_t y1, float* scratch, int64_t* ci, int64_t* cu) {
        fn(logits + m * plane, lw, view_of(m), y0, y1, threshold, scratch, ci, cu);
      },
      inter, uni);
}

}  // namespace rows
}  // namespace samr1
