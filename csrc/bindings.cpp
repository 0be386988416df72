// The pybind11 module samr1._C. Keep it thin: each op lives in its own csrc/<op>.cpp with a
// `bind_<op>(m)` function and adds one line here.
#include <pybind11/pybind11.h>

#include "mask_iou.h"
#include "mask_iou_sam2.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "samr1 CPU kernels (optional; samr1 falls back to torch without them)";
  samr1::bind_mask_iou(m);
  samr1::bind_mask_iou_sam2(m);
}
