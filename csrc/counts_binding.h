// The Python side of a fused mask-IoU op's counts function (pybind11): the argument checks every such
// binding makes, and the common call shape (numpy arrays in, zero-copy; the GIL released while the kernel
// runs). Plans come from Python; a wrong one must raise ValueError, never read out of bounds.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace samr1 {
namespace rows {

namespace py = pybind11;

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

// Plans come from Python; a wrong one must raise (ValueError), never read out of bounds.
inline void check(bool ok, const char* fn, const std::string& msg) {
  if (!ok) throw std::invalid_argument(std::string(fn) + ": " + msg);
}

template <typename T>
void check_range(const T* v, int64_t n, int64_t hi, const char* fn, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    check(v[i] >= 0 && int64_t(v[i]) < hi, fn,
          std::string(what) + " index out of range (plan does not match the shapes)");
}

// The gather kernels assume each column pair (i0 = c[0:W], i1 = c[W:2W]) is non-decreasing with
// i0 <= i1; `pairs` such pairs follow each other in c.
inline void check_columns(const int32_t* c, int64_t W, int pairs, const char* fn) {
  for (int k = 0; k < pairs; ++k) {
    const int32_t* i0 = c + 2 * k * W;
    const int32_t* i1 = i0 + W;
    for (int64_t x = 0; x < W; ++x) {
      check(i0[x] <= i1[x], fn, "column plan must have i0 <= i1");
      check(x == 0 || (i0[x] >= i0[x - 1] && i1[x] >= i1[x - 1]), fn,
            "column plan must be non-decreasing");
    }
  }
}

// The arrays every plan tuple starts with, (idx int32, wts float32, gt uint8 H x W, ...): converted when
// they are not already of that type (the copies go to `keep`, so that they outlive the call), the tuple's
// size and gt's shape checked. `layout` names the tuple's fields for the message.
struct PlanArrays {
  const int32_t* idx;
  int64_t idx_len;
  const float* wts;
  int64_t wts_len;
  const uint8_t* gt;
  int64_t H, W;
};

inline PlanArrays plan_arrays(const py::tuple& t, size_t fields, const char* fn, const char* layout,
                              std::vector<py::object>& keep) {
  check(t.size() == fields, fn, std::string("each plan is ") + layout);
  auto idx = t[0].cast<carray<int32_t>>();
  auto wts = t[1].cast<carray<float>>();
  auto gt = t[2].cast<carray<uint8_t>>();
  check(gt.ndim() == 2 && gt.shape(0) > 0 && gt.shape(1) > 0, fn, "gt must be a non-empty 2-D uint8 array");
  check(idx.ndim() == 1 && wts.ndim() == 1, fn, "idx and wts must be 1-D");
  const PlanArrays a{idx.data(), idx.shape(0), wts.data(), wts.shape(0), gt.data(), gt.shape(0), gt.shape(1)};
  keep.push_back(idx);
  keep.push_back(wts);
  keep.push_back(gt);
  return a;
}

// One call of a counts function `fn` (its name, for messages): checks `isa` ("auto" or "avx2"), the
// N x lh x lw logits and image_index (N entries in [0, B), or empty when B == 1) against the B plans,
// converts each plan with plan_of(tuple, lh, lw, keep) (converted arrays go to `keep`, so that they outlive
// the call), then runs kernel(logits, N, lh, lw, image_index or nullptr, plans, B, isa code, inter, uni)
// without the GIL and returns (inter, uni), int64 (N,) each.
template <typename Plan, typename PlanOf, typename Kernel>
py::tuple counts_call(const char* fn, const carray<float>& logits, const carray<int64_t>& image_index,
                      const py::list& plans, const std::string& isa, PlanOf plan_of, Kernel kernel) {
  check(isa == "auto" || isa == "avx2", fn, "isa must be 'auto' or 'avx2'");
  check(logits.ndim() == 3, fn, "logits must be N x h x w float32");
  const int64_t N = logits.shape(0), lh = logits.shape(1), lw = logits.shape(2);
  const int64_t B = int64_t(py::len(plans));
  check(B >= 1, fn, "need at least one image plan");
  const bool has_index = image_index.size() > 0;
  check(!has_index || (image_index.ndim() == 1 && image_index.shape(0) == N), fn,
        "image_index must have N entries (or be empty when there is one image)");
  check(has_index || B == 1, fn, "image_index is required with several images");
  if (has_index) check_range(image_index.data(), N, B, fn, "image_index");
  std::vector<Plan> cplans;
  std::vector<py::object> keep;
  for (int64_t b = 0; b < B; ++b) cplans.push_back(plan_of(plans[b].cast<py::tuple>(), lh, lw, keep));
  carray<int64_t> inter(N), uni(N);
  int64_t* pi = inter.mutable_data();
  int64_t* pu = uni.mutable_data();
  const float* pl = logits.data();
  const int64_t* pidx = has_index ? image_index.data() : nullptr;
  {
    py::gil_scoped_release release;
    kernel(pl, N, lh, lw, pidx, cplans.data(), B, isa == "avx2" ? 1 : 0, pi, pu);
  }
  return py::make_tuple(inter, uni);
}

}  // namespace rows
}  // namespace samr1
