// Fused SAM 2 logits -> mask -> IoU counts on the CPU (see mask_iou_sam2.h for the contract).
//
// SAM 2's postprocess is one separable bilinear resize, two taps per output row and column, so per
// mask we stream over output rows and keep two x-resized low-res rows in flight (per thread, reused):
//
//   low-res row ly --(x: two taps per output column)--> a[ly][X]                      (W floats)
//   output row Y   = lerp_y(a[y0(Y)], a[y1(Y)])  -> > threshold -> AND / OR gt -> counts
//
// Each value is computed with the same operands in the same order as aten's CPU upsample_bilinear2d
// (x lerp per input row, then the y lerp), from tables computed as aten computes them
// (samr1.ops.mask_iou.axis_table); the `fused` variant uses fma like torch's AVX2/AVX-512 build, so on
// those CPUs the values equal F.interpolate's bit for bit in the common case (measured: 256 x 256 logits
// to 480 x 640, 1080 x 1920, 97 x 131, 257 x 3, 100 x 256: all equal). aten takes other code paths for
// some shapes (17 x 11 logits: 1-ulp differences), so the contract is equal masks except within
// samr1.ops.near_threshold_eps of the threshold. The plain variant computes a * wa + b * wb with two
// roundings, which is what the torch row-block path (samr1.ops.mask_iou_sam2, backend "fused") does:
// on x86 the two agree bit for bit (tests check it). The row kernels are those of SAM v1's op
// (row_blocks.h): the x resize is a gathered row (window load + permute on x86), the y lerp is
// thresholded and counted with compare masks + popcount.
#include "mask_iou_sam2.h"

#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <vector>

#include "counts_binding.h"
#include "row_blocks.h"

namespace samr1 {
namespace {

using rows::Isa;
using rows::RowCache;

struct Sam2View {
  const int32_t *y0, *y1, *x0, *x1;
  const float *wy0, *wy1, *wx0, *wx1;
  const uint8_t* gt;
  int64_t H, W;
};

Sam2View view(const Sam2Plan& p) {
  Sam2View v;
  v.y0 = p.idx;
  v.y1 = v.y0 + p.H;
  v.x0 = v.y1 + p.H;
  v.x1 = v.x0 + p.W;
  v.wy0 = p.wts;
  v.wy1 = v.wy0 + p.H;
  v.wx0 = v.wy1 + p.H;
  v.wx1 = v.wx0 + p.W;
  v.gt = p.gt;
  v.H = p.H;
  v.W = p.W;
  return v;
}

// Output rows [y_begin, y_end) of one mask. `scratch` holds 2 * W floats (two x-resized rows). Adds
// the counts of these rows to *inter / *uni. always_inline members, so that everything is compiled
// inside the ISA-specific variants (row_blocks.h: rows::pick_block) with their target attributes.
template <bool kFused, Isa kIsa>
struct Sam2Block {
  const float* __restrict L;
  int64_t lw;
  const Sam2View& p;
  float* a[2];
  RowCache cache;

  SAMR1_INLINE Sam2Block(const float* L_, int64_t lw_, const Sam2View& p_, float* scratch)
      : L(L_), lw(lw_), p(p_) {
    a[0] = scratch;
    a[1] = scratch + p.W;
  }

  // The x-resized low-res row ly (computed once while it stays in one of the two slots).
  SAMR1_INLINE int get_a(int64_t ly, int64_t keep) {
    int s = cache.find(ly);
    if (s >= 0) return s;
    s = cache.victim(keep);
    rows::gather_row<kFused, kIsa>(L + ly * lw, lw, p.x0, p.x1, p.wx0, p.wx1, a[s], p.W);
    cache.tag[s] = ly;
    return s;
  }

  SAMR1_INLINE void run(int64_t y_begin, int64_t y_end, float thr, int64_t* inter, int64_t* uni) {
    const int64_t W = p.W;
    int64_t acc_i = 0, acc_u = 0;
    for (int64_t y = y_begin; y < y_end; ++y) {
      const int64_t ly0 = p.y0[y], ly1 = p.y1[y];
      const int s0 = get_a(ly0, -2);
      const int s1 = get_a(ly1, ly0);
      rows::count_row<kFused, kIsa>(a[s0], a[s1], p.wy0[y], p.wy1[y], p.gt + y * W, thr, W, &acc_i,
                                    &acc_u);
    }
    *inter += acc_i;
    *uni += acc_u;
  }
};

}  // namespace

void mask_iou_sam2_counts(const float* logits, int64_t N, int64_t lh, int64_t lw,
                          const int64_t* image_index, const Sam2Plan* plans, int64_t n_images,
                          float threshold, bool fused, int num_threads, int64_t* inter, int64_t* uni,
                          int isa, int64_t work_per_thread) {
  std::vector<Sam2View> views;
  for (int64_t b = 0; b < n_images; ++b) views.push_back(view(plans[b]));
  // units of one mask: output pixels + x-resized row values (at most every low-res row, 2 per output row)
  auto work = [lh](const Sam2View& p) { return p.W * (p.H + std::min(lh, 2 * p.H)); };
  rows::count_masks<Sam2Block>(logits, N, lh, lw, image_index, views, 2, work, threshold, fused, isa,
                               num_threads, work_per_thread, "mask_iou_sam2", inter, uni);
}

// ---------------------------------------------------------------------------------------------
// Python binding (counts_binding.h: numpy arrays in, zero-copy; no GIL while the kernel runs).

namespace py = pybind11;

namespace {

constexpr const char* kFn = "samr1._C.mask_iou_sam2_counts";

Sam2Plan plan_of(const py::tuple& t, int64_t lh, int64_t lw, std::vector<py::object>& keep) {
  const auto a = rows::plan_arrays(t, 3, kFn, "(idx int32, wts float32, gt uint8 H x W)", keep);
  const int64_t H = a.H, W = a.W;
  rows::check(lh > 0 && lw > 0, kFn, "logits must have h, w > 0");
  rows::check(a.idx_len == 2 * H + 2 * W, kFn, "idx has the wrong length");
  rows::check(a.wts_len == 2 * H + 2 * W, kFn, "wts has the wrong length");
  rows::check_range(a.idx, 2 * H, lh, kFn, "low-res row");
  rows::check_range(a.idx + 2 * H, 2 * W, lw, kFn, "low-res column");
  rows::check_columns(a.idx + 2 * H, W, 1, kFn);
  return Sam2Plan{a.idx, a.wts, a.gt, H, W};
}

py::tuple mask_iou_sam2_counts_py(const rows::carray<float>& logits,
                                  const rows::carray<int64_t>& image_index, const py::list& plans,
                                  float threshold, bool fused, int num_threads, const std::string& isa,
                                  int64_t work_per_thread) {
  return rows::counts_call<Sam2Plan>(
      kFn, logits, image_index, plans, isa, plan_of,
      [&](const float* l, int64_t N, int64_t lh, int64_t lw, const int64_t* index, const Sam2Plan* p,
          int64_t B, int isa_code, int64_t* inter, int64_t* uni) {
        mask_iou_sam2_counts(l, N, lh, lw, index, p, B, threshold, fused, num_threads, inter, uni,
                             isa_code, work_per_thread);
      });
}

}  // namespace

void bind_mask_iou_sam2(py::module_& m) {
  m.def("mask_iou_sam2_counts", &mask_iou_sam2_counts_py, py::arg("logits").noconvert(),
        py::arg("image_index").noconvert(), py::arg("plans"), py::arg("threshold"),
        py::arg("fused"), py::arg("num_threads") = 0, py::arg("isa") = "auto",
        py::arg("work_per_thread") = -1,
        "Intersection and union counts (int64 N each) of SAM 2-postprocessed masks vs gt.\n"
        "logits: N x h x w float32 C-contiguous; image_index: int64 (N,) or empty; plans: list of\n"
        "(idx int32, wts float32, gt uint8 H x W) from samr1.ops.mask_iou_sam2.sam2_plan.\n"
        "fused: fma arithmetic like torch's AVX2/AVX-512 kernel (False: a * wa + b * wb, like the\n"
        "torch row-block path); num_threads <= 0: OpenMP default; isa: 'auto' or 'avx2' (tests);\n"
        "work_per_thread: units (output pixels + x-resized row values) per woken thread; -1: the\n"
        "default, 0: wake all num_threads.");
}

}  // namespace samr1
