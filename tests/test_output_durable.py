"""Sealing survives a power cut (dpi/writer.py _durable_rename): the sealed file is fsync'ed before it is renamed
to its final name, and its directory after, so the final name never points at a file whose data the disk
does not hold yet. A power cut cannot be staged in a test; what is checked is the order of the system calls
that makes it safe, as strace records them from a real `flowtap replay`, for each output format, and that
the sealed file then holds the records.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "sample.pcap"

pytestmark = pytest.mark.skipif(shutil.which("strace") is None,
                                reason="strace not installed (apt-get install strace; sh setup.sh --test does)")

# strace -y prints a descriptor with its path: fsync(5</tmp/x/.out.arrows.partial-42>) = 0
FSYNC = re.compile(r"^\d+\s+fsync\(\d+<(?P<path>[^>]*)>\)\s+=\s+(?P<rc>-?\d+)")
# os.replace is rename(2) or renameat(2)/renameat2(2), depending on the libc
RENAME = re.compile(r'^\d+\s+rename(?:at2?)?\((?:[^,]+,\s*)?"(?P<src>[^"]*)",\s*(?:[^,]+,\s*)?"(?P<dst>[^"]*)"'
                    r'(?:,\s*[^)]*)?\)\s+=\s+(?P<rc>-?\d+)')


def _syscalls(log: Path) -> list[tuple[str, str, str]]:
    """("fsync", path, "") and ("rename", src, dst) in the order the process made them, successful ones only."""
    out = []
    for line in log.read_text().splitlines():
        m = FSYNC.match(line)
        if m and m["rc"] == "0":
            out.append(("fsync", m["path"], ""))
            continue
        m = RENAME.match(line)
        if m and m["rc"] == "0":
            out.append(("rename", m["src"], m["dst"]))
    return out


def _rows(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] == b"PAR1":
        return pq.ParquetFile(path).metadata.num_rows
    with pa.memory_map(str(path)) as m:
        if head == b"ARROW1":
            return pa.ipc.open_file(m).read_all().num_rows
        return pa.ipc.open_stream(m).read_all().num_rows


@pytest.mark.parametrize("name,extra", [("out.parquet", []), ("out.parquet", ["--no-parquet-journal"]),
                                        ("out.arrow", []), ("out.arrows", [])])
def test_sealed_file_synced_before_rename_and_directory_after(tmp_path, name, extra):
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} missing (bundled with the repository)")
    outdir = (tmp_path / "out").resolve()
    outdir.mkdir()
    out = outdir / name
    log = tmp_path / "strace.log"
    r = subprocess.run(["strace", "-f", "-y", "-o", str(log), "-e", "trace=fsync,rename,renameat,renameat2",
                        sys.executable, "-m", "probe.cli", "replay", str(SAMPLE), "-o", str(out), *extra],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    calls = _syscalls(log)
    final = [i for i, c in enumerate(calls) if c[0] == "rename" and c[2] == str(out)]
    assert len(final) == 1, calls
    i = final[0]
    src = calls[i][1]
    assert Path(src).parent == outdir and Path(src).name.startswith(f".{name}."), src
    # the file under its temporary name is synced before it takes the final name ...
    assert ("fsync", src, "") in calls[:i], calls
    # ... and the directory after, so that the rename itself is on disk
    assert ("fsync", str(outdir), "") in calls[i + 1:], calls
    # the summary's record count is what the sealed file holds
    m = re.search(r"(\d[\d,]*) records", r.stdout)
    assert m, r.stdout
    assert _rows(out) == int(m.group(1).replace(",", "")) > 0
    assert sorted(p.name for p in outdir.iterdir()) == [name]   # no temporary file left
