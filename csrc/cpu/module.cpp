// Python bindings of neumeta_fast._C (CPU extension, always built).
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "neumeta_fast CPU extension";
  m.attr("abi") = 1;
}
