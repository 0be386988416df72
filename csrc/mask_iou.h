// Fused SAM low-res logits -> postprocessed mask -> intersection / union counts (CPU).
//
// The mask is segment_anything's `Sam.postprocess_masks(...) > threshold` up to float rounding
// (equal except where the reference's value is within samr1.ops.near_threshold_eps of the threshold):
// bilinear (align_corners=False) upsample of the h x w logits to frame x frame, crop to
// [:ih, :iw], bilinear resize to H x W, strict threshold. Neither the frame x frame nor the H x W
// mask is ever materialised: see mask_iou.cpp for the row pipeline and the table layout.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

namespace samr1 {

// One image of a (grouped) call: its interpolation plan (built and cached on the Python side by
// samr1.ops.mask_iou.image_plan) and its ground truth.
//
// idx (int32) = [r2_i0 (H), r2_i1 (H), r1_i0 (ih), r1_i1 (ih), ca0 (W), ca1 (W), cb0 (W), cb1 (W)]
// wts (f32)   = [r2_w0 (H), r2_w1 (H), r1_w0 (ih), r1_w1 (ih), ua0 (W), ua1 (W), ub0 (W), ub1 (W),
//                vx0 (W), vx1 (W)]
//   r2: output row Y -> frame rows (cropped frame, < ih) and weights (second resize, vertical);
//   r1: frame row -> low-res rows and weights (first resize, vertical);
//   output column X uses frame columns c0(X), c1(X) with weights vx0, vx1 (second resize,
//   horizontal); ca0/ca1/ua0/ua1 are the low-res columns and weights of frame column c0(X),
//   cb0/cb1/ub0/ub1 those of c1(X) (first resize, horizontal), composed on the host.
struct ImagePlan {
  const int32_t* idx;
  const float* wts;
  const uint8_t* gt;  // H x W, row-major, nonzero = object
  int64_t H;
  int64_t W;
  int64_t ih;
};

// True when this build + CPU can run the fused-multiply-add variant (x86: AVX2+FMA at run time).
bool mask_iou_fma_supported();

// logits: N x lh x lw float32, row-major. image_index: N entries in [0, n_images), or nullptr
// (all rows use image 0). Writes inter[N], uni[N]. `fused` picks fma(a, wa, b * wb) (what torch's
// AVX2/AVX-512 CPU kernels compute, the compiler contracts them) instead of a * wa + b * wb.
// Runs with up to `num_threads` OpenMP threads (<= 0: the OpenMP default), one per
// `work_per_thread` units of work (output pixels + H-row values; < 0: rows::kDefaultWorkPerThread in
// row_blocks.h, 0: all of them). isa: 0 = best variant for this CPU, 1 = force AVX2 on x86 (tests). Thread-safe, no Python.
void mask_iou_counts(const float* logits, int64_t N, int64_t lh, int64_t lw,
                     const int64_t* image_index, const ImagePlan* plans, int64_t n_images,
                     float threshold, bool fused, int num_threads, int64_t* inter, int64_t* uni,
                     int isa = 0, int64_t work_per_thread = -1);

// Adds the Python functions of this op to samr1._C (called from bindings.cpp).
void bind_mask_iou(pybind11::module_& m);

}  // namespace samr1
