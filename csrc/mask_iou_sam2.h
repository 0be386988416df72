// Fused SAM 2 low-res logits -> postprocessed mask -> intersection / union counts (CPU).
//
// The mask is SAM 2's `SAM2Transforms.postprocess_masks(...) > threshold` up to float rounding (equal
// except where the reference's value is within samr1.ops.near_threshold_eps of the threshold): ONE
// bilinear (align_corners=False) resize of the h x w logits to the original H x W (SAM 2 squashes the
// image into its square frame, so there is no crop), strict threshold. The H x W mask is never
// materialised: see mask_iou_sam2.cpp for the row pipeline.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

namespace samr1 {

// One image of a (grouped) call: its two-tap tables (built and cached on the Python side by
// samr1.ops.mask_iou_sam2.sam2_plan) and its ground truth.
//
// idx (int32) = [y0 (H), y1 (H), x0 (W), x1 (W)]
// wts (f32)   = [wy0 (H), wy1 (H), wx0 (W), wx1 (W)]
//   output pixel (Y, X) = a[y0(Y)][X] * wy0(Y) + a[y1(Y)][X] * wy1(Y), where the x-resized low-res row
//   a[ly][X] = l[ly][x0(X)] * wx0(X) + l[ly][x1(X)] * wx1(X): x first, then y, like aten.
struct Sam2Plan {
  const int32_t* idx;
  const float* wts;
  const uint8_t* gt;  // H x W, row-major, nonzero = object
  int64_t H;
  int64_t W;
};

// logits: N x lh x lw float32, row-major. image_index: N entries in [0, n_images), or nullptr (all rows
// use image 0). Writes inter[N], uni[N]. `fused` computes each two-tap sum as fma(a, wa, b * wb) (what
// torch's AVX2/AVX-512 CPU kernel computes: the compiler contracts it there) instead of a * wa + b * wb
// (what samr1's torch row-block path computes, bit for bit). Up to `num_threads` OpenMP threads (<= 0:
// the OpenMP default), one per `work_per_thread` units of work (output pixels + x-resized row values;
// < 0: rows::kDefaultWorkPerThread, 0: all of them). isa: 0 = best variant for this CPU, 1 = force AVX2
// on x86 (tests). Thread-safe, no Python.
void mask_iou_sam2_counts(const float* logits, int64_t N, int64_t lh, int64_t lw,
                          const int64_t* image_index, const Sam2Plan* plans, int64_t n_images,
                          float threshold, bool fused, int num_threads, int64_t* inter, int64_t* uni,
                          int isa = 0, int64_t work_per_thread = -1);

// Adds the Python functions of this op to samr1._C (called from bindings.cpp).
void bind_mask_iou_sam2(pybind11::module_& m);

}  // namespace samr1
