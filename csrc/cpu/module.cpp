// Python bindings of neumeta_fast._C (CPU extension, always built).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <torch/extension.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "coordinates.h"
#include "inr_forward.h"
#include "inr_train.h"
#include "tsp.h"
#include "tsp_testing.h"

namespace py = pybind11;

namespace {

// Calls fn(data, n) with the typed data of `dist`, a C-contiguous square
// float32 or float64 array (the Python wrapper converts anything else),
// without the GIL.
template <typename Fn>
auto with_matrix(const py::array& dist, Fn fn) {
  if (dist.ndim() != 2 || dist.shape(0) != dist.shape(1))
    throw std::invalid_argument("dist must be a square 2-D array, got " + std::to_string(dist.ndim()) + " dimensions");
  if (!(dist.flags() & py::array::c_style)) throw std::invalid_argument("dist must be C-contiguous");
  const int64_t n = dist.shape(0);
  const bool f32 = dist.dtype().is(py::dtype::of<float>());
  if (!f32 && !dist.dtype().is(py::dtype::of<double>()))
    throw std::invalid_argument("dist must be float32 or float64, got " + std::string(py::str(dist.dtype())));
  const void* data = dist.data();
  py::gil_scoped_release release;
  return f32 ? fn(static_cast<const float*>(data), n) : fn(static_cast<const double*>(data), n);
}

py::array_t<int64_t> tsp_solve(const py::array& dist, bool path, double time_limit, uint64_t seed) {
  const neumeta::tsp::Options opt{path, time_limit, seed};
  const std::vector<int64_t> order =
      with_matrix(dist, [&](const auto* data, int64_t n) { return neumeta::tsp::solve(data, n, opt); });
  py::array_t<int64_t> out(static_cast<py::ssize_t>(order.size()));
  if (!order.empty()) std::memcpy(out.mutable_data(), order.data(), order.size() * sizeof(int64_t));
  return out;
}

double tsp_lower_bound(const py::array& dist, bool path) {
  return with_matrix(dist, [&](const auto* data, int64_t n) { return neumeta::tsp::lower_bound(data, n, path); });
}

double tsp_validate(const py::array& dist) {
  return with_matrix(dist, [&](const auto* data, int64_t n) { return neumeta::tsp::validate(data, n); });
}

// Test-only bindings of the solver's pieces (csrc/cpu/tsp_testing.h), for tests/test_tsp_parts.py.
void bind_tsp_testing(py::module_& m) {
  namespace t = neumeta::tsp::testing;
  using Ints = std::vector<int>;
  m.def("_tsp_test_kick_and_undo", [](const py::array& dist, bool path, const Ints& tour, uint64_t seed) {
    const t::KickResult r = with_matrix(dist, [&](const auto* d, int64_t n) { return t::kick_and_undo(d, n, path, tour, seed); });
    return py::make_tuple(r.kicked, r.restored, r.added, r.gain);
  }, py::arg("dist"), py::arg("path"), py::arg("tour"), py::arg("seed"),
        "Test only: (kicked tour, tour after undo, kick's added length, search's gain) of one kick.");
  m.def("_tsp_test_move", [](const py::array& dist, bool path, const Ints& tour, int city, int max_k) {
    const t::MoveResult r = with_matrix(dist, [&](const auto* d, int64_t n) { return t::move(d, n, path, tour, city, max_k); });
    return py::make_tuple(r.gain, r.tour);
  }, py::arg("dist"), py::arg("path"), py::arg("tour"), py::arg("city"), py::arg("max_k"),
        "Test only: (reported gain, tour after) of the first improving move at city.");
  m.def("_tsp_test_ascent_bound", [](const py::array& dist, bool path) {
    return with_matrix(dist, [&](const auto* d, int64_t n) { return t::ascent_bound(d, n, path); });
  }, py::arg("dist"), py::arg("path"), "Test only: lower_bound()'s subgradient ascent at any n >= 3.");
  m.def("_tsp_test_candidates", [](const py::array& dist, bool path, const std::vector<double>& pi) {
    return with_matrix(dist, [&](const auto* d, int64_t n) { return t::candidates(d, n, path, pi); });
  }, py::arg("dist"), py::arg("path"), py::arg("pi"), "Test only: candidate lists under penalties pi.");
  m.def("_tsp_test_held_karp", [](const py::array& dist, bool path) {
    return with_matrix(dist, [&](const auto* d, int64_t n) { return t::held_karp(d, n, path); });
  }, py::arg("dist"), py::arg("path"), "Test only: the Held-Karp dynamic program's optimal order.");
  m.def("_tsp_test_branch_and_bound", [](const py::array& dist, double ub) {
    return with_matrix(dist, [&](const auto* d, int64_t n) { return t::branch_and_bound(d, n, ub); });
  }, py::arg("dist"), py::arg("ub"), "Test only: branch and bound's shortest tour below ub (empty if none).");
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "neumeta_fast CPU extension";
  m.attr("abi") = 1;
  m.attr("tsp_exact_max_n") = neumeta::tsp::kExactMaxN;
  m.def("tsp_solve", &tsp_solve, py::arg("dist"), py::arg("path"), py::arg("time_limit"), py::arg("seed"),
        "Order of the cities of a symmetric float32/float64 matrix (see neumeta_fast.tsp.solve). "
        "time_limit < 0: run until converged. Releases the GIL.");
  m.def("tsp_lower_bound", &tsp_lower_bound, py::arg("dist"), py::arg("path"),
        "Lower bound on the shortest path / tour (see neumeta_fast.tsp.lower_bound). Releases the GIL.");
  m.def("tsp_validate", &tsp_validate, py::arg("dist"),
        "Checks dist as tsp_solve does (finite, symmetric, entries within tsp_max_entry); returns the largest "
        "|entry| off the diagonal. Releases the GIL.");
  m.def("tsp_max_entry", &neumeta::tsp::max_entry, py::arg("n"),
        "The largest |entry| off the diagonal tsp_solve accepts for n cities.");
  bind_tsp_testing(m);
  m.def("fill_coordinates", &neumeta::coordinates::fill, py::arg("out"), py::arg("index"), py::arg("num_tensors"),
        py::arg("a_size"), py::arg("b_size"), py::arg("cols"),
        "Write one tensor's coordinate rows (docs/spec.md §2) into out [a_size * b_size, 6] (float32, CPU).",
        py::call_guard<py::gil_scoped_release>());
  using neumeta::inr_forward::Tail;
  py::class_<Tail>(m, "ResMLPTail", "The residual blocks and output layer of one ResMLP (contiguous float32 CPU tensors).")
      .def(py::init<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<double>, at::Tensor, at::Tensor>(),
           py::arg("block_weights"), py::arg("block_biases"), py::arg("scalars"), py::arg("wo"), py::arg("bo"));
  m.def("inr_forward", &neumeta::inr_forward::forward, py::arg("pe"), py::arg("w0"), py::arg("b0"), py::arg("tail"),
        "Inference forward of one ResMLP on features pe, bias + ReLU + scaled residual fused into one pass "
        "per block (no autograd). Releases the GIL.",
        py::call_guard<py::gil_scoped_release>());
  m.def("inr_forward_separable", &neumeta::inr_forward::forward_separable, py::arg("u"), py::arg("v"),
        py::arg("row_start"), py::arg("rows"), py::arg("tail"),
        "The same on rows [row_start, row_start + rows) of an A x B tensor whose first-layer pre-activation "
        "is u[a] + v[b] (see csrc/cpu/inr_forward.h). Releases the GIL.",
        py::call_guard<py::gil_scoped_release>());
  m.def("inr_train_forward", &neumeta::inr_train::forward, py::arg("z0"), py::arg("offsets"), py::arg("mlps"),
        py::arg("wr"), py::arg("br"), py::arg("sc"), py::arg("wo"), py::arg("bo"),
        "Training forward of the ResMLPs after their first layer, rows grouped by MLP: (out, h, t) "
        "(see csrc/cpu/inr_train.h). Releases the GIL.",
        py::call_guard<py::gil_scoped_release>());
  m.def("inr_train_backward", &neumeta::inr_train::backward, py::arg("gout"), py::arg("h"), py::arg("t"),
        py::arg("offsets"), py::arg("mlps"), py::arg("wr"), py::arg("sc"), py::arg("wo"),
        "Its backward: (dz0, dwr, dbr, dsc, dwo, dbo). Releases the GIL.",
        py::call_guard<py::gil_scoped_release>());
}
