"""Packaging: pyproject.toml's metadata matches the code, the files a release needs exist, and the
library works without its optional Triton dependency."""
import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

import neumeta_fast
from neumeta_fast import cli

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_build_needs_torch_and_the_version_has_one_source():
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"
    assert any(re.match(r"torch\b", r) for r in PYPROJECT["build-system"]["requires"])  # setup.py imports it
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "neumeta_fast._version.__version__"}
    assert importlib.metadata.version("neumeta_fast") == neumeta_fast.__version__  # the installed metadata


def test_base_install_leaves_triton_out_and_the_test_extra_brings_it():
    project = PYPROJECT["project"]
    assert not any("triton" in r for r in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(r.startswith("triton") for r in extras["triton"])
    assert "neumeta_fast[demo,triton]" in extras["test"]


def test_console_script_is_the_cli():
    assert PYPROJECT["project"]["scripts"] == {"neumeta-fast": "neumeta_fast.cli:main"}
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="neumeta-fast")
    assert entry.load() is cli.main
    script = pathlib.Path(sys.executable).parent / "neumeta-fast"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "demo" in done.stdout, done.stderr


def test_every_package_is_listed_and_py_typed_ships():
    setuptools = PYPROJECT["tool"]["setuptools"]
    dirs = {"neumeta_fast.kernels": ROOT / "kernels"}
    dirs.update({".".join(p.parent.relative_to(ROOT).parts): p.parent
                 for p in (ROOT / "neumeta_fast").rglob("__init__.py")})
    assert sorted(setuptools["packages"]) == sorted(dirs)  # a package left out is missing from a wheel
    assert setuptools["package-dir"] == {"neumeta_fast.kernels": "kernels"}
    assert setuptools["package-data"]["neumeta_fast"] == ["py.typed"]
    assert (ROOT / "neumeta_fast" / "py.typed").is_file()


def test_license_and_citation():
    assert PYPROJECT["project"]["license"] == "MIT" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    cff = (ROOT / "CITATION.cff").read_text()
    top = dict(re.findall(r"^([a-z-]+):(.*)$", cff, flags=re.M))  # the top-level keys of the YAML
    assert {"cff-version", "message", "title", "authors", "preferred-citation"} <= set(top)
    assert top["cff-version"].strip() == "1.2.0"
    for fact in ('"Neural Metamorphosis"', "family-names: Yang", "given-names: Xingyi", "family-names: Wang",
                 "given-names: Xinchao", "year: 2024", "ECCV 2024", "10.48550/arXiv.2410.11878"):
        assert fact in cff


_WITHOUT_TRITON = """
import importlib.abc, sys

class NoTriton(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTriton())
import torch
import neumeta_fast as nf

inr, layout = nf.INR(2, hidden_dim=8, num_freqs=2), nf.Layout.from_shapes([("w", (3, 2)), ("b", (3,))])
weights = nf.generate(inr, layout, norm=4.0)
assert sorted(weights) == ["b", "w"] and "triton" not in sys.modules
print(nf.backends("cpu")["triton"])
try:
    nf.generate(inr, layout, norm=4.0, backend="triton")
except RuntimeError as exc:
    print(exc)
"""


def test_library_works_without_triton_and_says_why_its_backend_cannot():
    done = subprocess.run([sys.executable, "-c", _WITHOUT_TRITON], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    status, error = done.stdout.strip().splitlines()
    assert status == "not importable: No module named 'triton'"
    assert error == "backend 'triton' cannot run on cpu: not importable: No module named 'triton'"


def test_build_and_run_take_the_same_torch_range():
    """The extension is built against the build requirement's torch and loaded by the dependency's."""
    build = [r for r in PYPROJECT["build-system"]["requires"] if re.match(r"torch\b", r)]
    run = [r for r in PYPROJECT["project"]["dependencies"] if re.match(r"torch\b", r)]
    assert build == run == ["torch>=2.4,<2.14"]
