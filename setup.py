"""Build the C/Cython engine in ext/ into extension modules inside the Python packages.

Compiler directives are set once, here. FLOWTAP_DEBUG=1 rebuilds with Cython bounds, wraparound and
initialisation checks on, C asserts enabled and -O0 -g, for debugging and for the fuzzing build:

    FLOWTAP_DEBUG=1 pip install -e . --no-build-isolation
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

DEBUG = os.environ.get("FLOWTAP_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}
cflags = ["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3", "-DNDEBUG"]
cflags += ["-Wall", "-Wno-unused-function", "-Wno-unreachable-code", "-std=gnu11"]

common = dict(
    include_dirs=["ext", numpy.get_include()],
    extra_compile_args=cflags,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    depends=[os.path.join("ext", f) for f in os.listdir("ext") if f.endswith((".h", ".pxd"))]
    + [os.path.join("ext", "dpi", f) for f in os.listdir(os.path.join("ext", "dpi")) if f.endswith(".h")],
)

extensions = [
    # reader + parser: capture bytes -> struct ft_pkt records
    Extension("dpi._reader", ["ext/_reader.pyx", "ext/ft_reader.c"], **common),
    # flow table + meters + batch builder: records -> flow records
    Extension("dpi._flowtable", ["ext/_flowtable.pyx"], **common),
    # live capture: BPF ring buffer -> struct ft_pkt arrays (probe/bpf/ft_live.h is the kernel side)
    Extension("probe._ring", ["ext/_ring.pyx"], **common),
]

# Cython only regenerates a .c file when its .pyx changed, so switching between the debug and the release
# build must force it: the mode of the last generation is remembered next to the generated files.
_mode_file = os.path.join("ext", ".build-mode")
_mode = "debug" if DEBUG else "release"
try:
    with open(_mode_file) as f:
        _mode_changed = f.read().strip() != _mode
except OSError:
    _mode_changed = True



class build_py_with_data(build_py):
    """A wheel (non-editable install) has no checkout beside the packages, so it carries copies of what the
    code otherwise finds there: the shipped DPI rules (dpi/_shipped/rules) and the C headers the BPF
    programs include (probe/_shipped/ext). An editable install keeps reading the checkout's own files."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        copies = [("rules", ("dpi", "_shipped", "rules"), (".toml", ".md")),
                  ("ext", ("probe", "_shipped", "ext"), (".h",)),
                  (os.path.join("ext", "dpi"), ("probe", "_shipped", "ext", "dpi"), (".h",))]
        for src, dst, suffixes in copies:
            out = os.path.join(self.build_lib, *dst)
            self.mkpath(out)
            for name in sorted(os.listdir(src)):
                if name.endswith(suffixes):
                    self.copy_file(os.path.join(src, name), os.path.join(out, name))


setup(
    cmdclass={"build_py": build_py_with_data},
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["ext"],
        force=_mode_changed,
    ),
)

try:
    with open(_mode_file, "w") as f:
        f.write(_mode + "\n")
except OSError:
    pass
