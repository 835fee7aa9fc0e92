"""Build the fuzzing copy of the extensions into fuzz/build/ (git-ignored); the in-place build is untouched.

The sources (setup.py, ext/) are copied to fuzz/build/tree/ and built there by the project's own setup.py
with FLOWTAP_DEBUG=1 (Cython bounds, wraparound and initialisation checks on, C asserts on, -O0 -g), with
clang, and with every C file instrumented for libFuzzer's coverage (-fsanitize=fuzzer-no-link) and for
AddressSanitizer. The harnesses then load dpi._reader and dpi._flowtable from fuzz/build/tree/dpi (see
fuzz/common.py) and must run with atheris's asan_with_fuzzer.so preloaded (fuzz/run.py does that).

    /work/main/.venv/bin/python fuzz/build.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "fuzz" / "build"
TREE = BUILD / "tree"

SAN = "-fsanitize=address,fuzzer-no-link -fno-omit-frame-pointer"
# The fuzz build answers "no" for the CPU's SHA and AES extensions (ext/ft_cpu.h, FT_CPU_*), so the QUIC key
# derivation and the Community ID run their portable C SHA-256, AES and SHA-1: the paths that index tables.
NO_CPU_FEATURES = "-DFT_CPU_SHA()=0 -DFT_CPU_AES()=0"


def main() -> int:
    clang = shutil.which("clang")
    if clang is None:
        print("clang not found: apt-get install clang", file=sys.stderr)
        return 2
    TREE.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "setup.py", TREE / "setup.py")
    # the Cython output of the in-place build (ext/_*.c, ext/.build-mode) stays behind: the tree keeps its
    # own, which Cython regenerates when a copied .pyx is newer (copy2 keeps modification times)
    shutil.copytree(ROOT / "ext", TREE / "ext", dirs_exist_ok=True, copy_function=shutil.copy2,
                    ignore=shutil.ignore_patterns("_*.c", ".build-mode"))
    for pkg in ("dpi", "probe"):
        (TREE / pkg).mkdir(exist_ok=True)
        (TREE / pkg / "__init__.py").touch()
    # probe._ring includes the kernel side's record layout
    shutil.copytree(ROOT / "probe" / "bpf", TREE / "probe" / "bpf", dirs_exist_ok=True,
                    ignore=lambda d, names: [n for n in names if not n.endswith(".h")])
    env = dict(os.environ)
    env.update(FLOWTAP_DEBUG="1", CC=clang, LDSHARED=f"{clang} -shared",
               CFLAGS=f"{SAN} {NO_CPU_FEATURES}", LDFLAGS=SAN)
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=TREE, env=env)
    if r.returncode != 0:
        return r.returncode
    # the reader target calls ft_reader_run through ctypes and must allocate struct ft_reader itself
    prog = BUILD / "sizes.c"
    prog.write_text('#include <stdio.h>\n#include "ft_reader.h"\n'
                    'int main(void) { printf("%zu\\n", sizeof(struct ft_reader)); return 0; }\n')
    subprocess.run([clang, "-I", str(ROOT / "ext"), "-o", str(BUILD / "sizes"), str(prog)], check=True)
    size = subprocess.run([str(BUILD / "sizes")], capture_output=True, text=True, check=True).stdout.strip()
    (BUILD / "sizeof_ft_reader").write_text(size + "\n")
    built = sorted(p.name for p in (TREE / "dpi").glob("_*.so"))
    print("fuzz build:", ", ".join(built), "in", TREE / "dpi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
