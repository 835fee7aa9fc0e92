"""A wheel (what `pip install .` builds) must carry what the code otherwise reads from the checkout: the
shipped DPI rules and the C headers the BPF programs include. Builds the real wheel with the venv's own
build requirements (no index needed) and compares its members with the checkout."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("Cython")
    pytest.importorskip("wheel", reason="the 'wheel' package is needed to build a wheel")
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("flowtap-*.whl")
    return zipfile.ZipFile(whl)


def test_wheel_carries_rules(wheel):
    names = set(wheel.namelist())
    want = {p.name for p in (ROOT / "rules").iterdir() if p.suffix in (".toml", ".md")}
    got = {n.rsplit("/", 1)[1] for n in names if n.startswith("dpi/_shipped/rules/")}
    assert want and got == want
    for name in want:
        assert wheel.read(f"dpi/_shipped/rules/{name}") == (ROOT / "rules" / name).read_bytes()


def test_wheel_carries_bpf_headers(wheel):
    names = set(wheel.namelist())
    for h in ("ft_parse.h", "ft_record.h"):
        assert f"probe/_shipped/ext/{h}" in names
    dpi_h = sorted(p.name for p in (ROOT / "ext" / "dpi").glob("*.h"))
    assert dpi_h and all(f"probe/_shipped/ext/dpi/{h}" in names for h in dpi_h)
    assert any(n.startswith("dpi/_flowtable") and n.endswith(".so") for n in names)
