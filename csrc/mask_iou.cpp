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

#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "counts_binding.h"
#include "row_blocks.h"

namespace samr1 {
namespace {

using rows::Isa;
using rows::lerp2;
using rows::RowCache;

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

// Output rows [y_begin, y_end) of one mask. `scratch` holds 6 * W floats (2 G slots of 2 rows,
// 2 H_row slots). Adds the counts of these rows to *inter / *uni. Member functions are
// always_inline (no lambdas) so that everything is compiled inside the ISA-specific variants
// (row_blocks.h: rows::pick_block) with their target attributes.
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
    rows::gather_row<kFused, kIsa>(row, lw, p.ca0, p.ca1, p.ua0, p.ua1, ga, W);
    rows::gather_row<kFused, kIsa>(row, lw, p.cb0, p.cb1, p.ub0, p.ub1, gb, W);
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
      rows::count_row<kFused, kIsa>(h0, h1, w0, w1, grow, thr, W, &acc_i, &acc_u);
    }
    *inter += acc_i;
    *uni += acc_u;
  }
};

}  // namespace

bool mask_iou_fma_supported() { return rows::fma_supported(); }

void mask_iou_counts(const float* logits, int64_t N, int64_t lh, int64_t lw,
                     const int64_t* image_index, const ImagePlan* plans, int64_t n_images,
                     float threshold, bool fused, int num_threads, int64_t* inter, int64_t* uni,
                     int isa, int64_t work_per_thread) {
  std::vector<PlanView> views;
  for (int64_t b = 0; b < n_images; ++b) views.push_back(view(plans[b]));
  // units of one mask: output pixels + H-row values
  auto work = [](const PlanView& p) { return p.W * (p.H + 2 * std::min(p.ih, 2 * p.H)); };
  rows::count_masks<Block>(logits, N, lh, lw, image_index, views, 6, work, threshold, fused, isa,
                           num_threads, work_per_thread, "mask_iou", inter, uni);
}

// ---------------------------------------------------------------------------------------------
// Python binding (counts_binding.h: numpy arrays in, zero-copy; no GIL while the kernel runs).

namespace py = pybind11;

namespace {

constexpr const char* kFn = "samr1._C.mask_iou_counts";

ImagePlan plan_of(const py::tuple& t, int64_t lh, int64_t lw, std::vector<py::object>& keep) {
  const auto a = rows::plan_arrays(t, 4, kFn, "(idx int32, wts float32, gt uint8 H x W, ih)", keep);
  const int64_t H = a.H, W = a.W, ih = t[3].cast<int64_t>();
  rows::check(ih > 0, kFn, "empty plan");
  rows::check(a.idx_len == 2 * H + 2 * ih + 4 * W, kFn, "idx has the wrong length");
  rows::check(a.wts_len == 2 * H + 2 * ih + 6 * W, kFn, "wts has the wrong length");
  rows::check_range(a.idx, 2 * H, ih, kFn, "frame row");
  rows::check_range(a.idx + 2 * H, 2 * ih, lh, kFn, "low-res row");
  rows::check_range(a.idx + 2 * H + 2 * ih, 4 * W, lw, kFn, "low-res column");
  rows::check_columns(a.idx + 2 * H + 2 * ih, W, 2, kFn);
  return ImagePlan{a.idx, a.wts, a.gt, H, W, ih};
}

py::tuple mask_iou_counts_py(const rows::carray<float>& logits, const rows::carray<int64_t>& image_index,
                             const py::list& plans, float threshold, bool fused, int num_threads,
                             const std::string& isa, int64_t work_per_thread) {
  return rows::counts_call<ImagePlan>(
      kFn, logits, image_index, plans, isa, plan_of,
      [&](const float* l, int64_t N, int64_t lh, int64_t lw, const int64_t* index, const ImagePlan* p,
          int64_t B, int isa_code, int64_t* inter, int64_t* uni) {
        mask_iou_counts(l, N, lh, lw, index, p, B, threshold, fused, num_threads, inter, uni, isa_code,
                        work_per_thread);
      });
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
  m.def("work_per_thread_default", [] { return rows::kDefaultWorkPerThread; },
        "Units of work per woken OpenMP thread by default (below it a call runs on one thread).");
  m.def("mask_iou_fma_supported", &mask_iou_fma_supported,
        "True when the fused-multiply-add variant can run on this CPU.");
}

}  // namespace samr1