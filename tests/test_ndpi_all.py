"""Every nDPI test capture replays without a crash, a hang or a traceback, and its counters add up.

The 544 files of ../shared/data/ndpi/pcap (pcap and pcapng; Ethernet, raw IP, Linux SLL, null/loopback, PPP,
Cisco HDLC and PPI link types; fuzzed and deliberately malformed files, and a README.txt that is no capture)
go through dpi.replay.replay in this process, one file per run, output format rotating over Parquet, Arrow
IPC file and Arrow IPC stream. Per file:

- the output file exists under its name and reads back with the flowtap schema;
- the engine saw as many packets as the reader delivered, and as many as Wireshark's capinfos counted
  (../shared/data/ndpi/capinfos.tsv, an independent count) unless the reader stopped at an error;
- parse exit reasons add up to the packets seen; metered plus not metered packets add up to them too, and
  the not-metered reasons add up to the not-metered packets; the flow records' packets and IP octets add up
  to the metered packets and octets; the counters stored in the file equal those returned;
- a file the reader rejects yields an error naming the file and a byte offset inside it.

A handful of files also go through the `flowtap replay` command: exit status 0, or 3 with one
"flowtap: FILE: offset N: message" line per bad file on stderr, the good files' flows still written.
"""
from __future__ import annotations

import faulthandler
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dpi.engine import EngineConfig
from dpi.replay import replay
from dpi.schema import COLUMN_NAMES
from dpi.writer import read_counters

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLOWTAP_SHARED_DATA", ROOT / ".." / "shared" / "data"))
NDPI = SHARED / "ndpi"
PCAP_DIR = NDPI / "pcap"
HAVE_DATA = PCAP_DIR.is_dir() and (NDPI / "capinfos.tsv").is_file()
SKIP_REASON = (f"nDPI captures not found at {PCAP_DIR} (set FLOWTAP_SHARED_DATA to the shared data "
               "directory)")
FILES = sorted(p.name for p in PCAP_DIR.iterdir() if p.is_file()) if HAVE_DATA else []
FORMATS = (".parquet", ".arrow", ".arrows")
PER_FILE_LIMIT_S = 60   # the largest capture replays in well under a second; beyond this it is a hang
ERROR_RE = re.compile(r"^(?P<path>.+): offset (?P<offset>\d+): (?P<message>\S.*)$")


def _capinfos() -> dict[str, int]:
    """capinfos' packet count per capture name (columns: name, link type, precision, packets, ...)."""
    counts = {}
    for line in (NDPI / "capinfos.tsv").read_text().splitlines():
        cols = line.split("\t")
        counts[cols[0]] = int(cols[3])
    return counts


CAPINFOS = _capinfos() if HAVE_DATA else {}


def _read_output(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    with open(path, "rb") as f:
        if path.suffix == ".arrow":
            return pa.ipc.open_file(f).read_all()
        return pa.ipc.open_stream(f).read_all()


@pytest.fixture
def hang_guard():
    """A replay that does not finish within PER_FILE_LIMIT_S dumps every thread's stack and ends the run:
    a hang becomes a failure with a traceback instead of a stuck CI job."""
    faulthandler.dump_traceback_later(PER_FILE_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.skipif(not HAVE_DATA, reason=SKIP_REASON)
def test_the_corpus_is_the_one_described():
    """544 files: the 543 captures capinfos listed, and the README.txt that came with them."""
    assert len(FILES) == 544
    assert set(FILES) - set(CAPINFOS) == {"README.txt"}
    assert set(CAPINFOS) <= set(FILES)


@pytest.mark.parametrize("name", FILES or [pytest.param("", marks=pytest.mark.skip(reason=SKIP_REASON))])
def test_capture_replays_and_counts_add_up(name, tmp_path, hang_guard):
    path = PCAP_DIR / name
    out = tmp_path / ("flows" + FORMATS[FILES.index(name) % len(FORMATS)])
    config = EngineConfig(observer_host="test")
    res = replay([str(path)], str(out), config)

    # the output is complete and readable, whatever happened to the input
    assert out.is_file() and not list(tmp_path.glob(".*partial*"))
    table = _read_output(out)
    assert tuple(table.schema.names) == COLUMN_NAMES
    c = res.counters
    assert table.num_rows == res.records == c["records_exported"]
    stored = read_counters(str(out))
    assert stored is not None
    assert {k: stored[k] for k in ("packets_seen", "packets_metered", "bytes_metered", "records_exported")} \
        == {k: c[k] for k in ("packets_seen", "packets_metered", "bytes_metered", "records_exported")}

    # packets: reader -> engine, and against capinfos
    reader_packets = c["reader"].get("packets", 0)
    assert c["packets_seen"] == reader_packets == res.packets
    if res.errors:
        assert reader_packets < CAPINFOS.get(name, 1)   # stopped early (README.txt: no capture at all)
    else:
        assert reader_packets == CAPINFOS[name]

    # every packet seen has one parse exit reason; metered + not metered = seen
    assert sum(c["parse_reasons"].values()) == c["packets_seen"]
    assert c["packets_metered"] + c["packets_not_metered"] == c["packets_seen"]
    assert sum(c["not_metered_by_reason"].values()) == c["packets_not_metered"]
    for reason, n in c["not_metered_by_reason"].items():
        assert n <= c["parse_reasons"].get(reason, 0), reason

    # the flow records hold exactly the metered packets and octets
    def total(col):
        return sum(v for v in table.column(col).to_pylist())

    assert total("src_packets") + total("dst_packets") == c["packets_metered"]
    assert total("src_bytes") + total("dst_bytes") == c["bytes_metered"] == res.bytes_ip
    assert len(set(table.column("flow_id").to_pylist())) == c["flows_created"] == res.flows

    # errors name the file and an offset inside it
    size = path.stat().st_size
    for err in res.errors:
        m = ERROR_RE.match(err)
        assert m, err
        assert m["path"] == str(path)
        assert 0 <= int(m["offset"]) <= size
    assert res.errors == c["capture_errors"]


# --- a few through the command line ---------------------------------------------------------------------

CLI = [sys.executable, "-m", "probe.cli", "replay", "--observer", "test", "--no-progress", "--json"]
GOOD = ["dns.pcap",                 # Ethernet, VLAN and PPPoE
        "anydesk.pcapng",           # pcapng, per-packet timestamp resolution
        "bets.pcapng",              # raw IP
        "rtsp.pcap",                # Linux SLL
        "rdp.pcap",                 # null/loopback
        "vxlan.pcap"]               # tunnel
BAD = {"fuzz-2021-10-13.pcap": 24,  # record whose captured length (524,501) exceeds any snap length
       "README.txt": 0}             # not a capture


def _cli(tmp_path: Path, names: list[str], out_name: str = "out.parquet"):
    out = tmp_path / out_name
    proc = subprocess.run(CLI + [str(PCAP_DIR / n) for n in names] + ["-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return proc, out


@pytest.mark.skipif(not HAVE_DATA, reason=SKIP_REASON)
@pytest.mark.parametrize("name", GOOD)
def test_cli_good_capture_exits_0(tmp_path, name):
    proc, out = _cli(tmp_path, [name])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    summary = json.loads(proc.stdout)
    assert summary["errors"] == []
    assert summary["packets"] == CAPINFOS[name]
    assert pq.read_table(out).num_rows == summary["records"]


@pytest.mark.skipif(not HAVE_DATA, reason=SKIP_REASON)
@pytest.mark.parametrize("name", sorted(BAD))
def test_cli_malformed_capture_exits_3_with_one_line(tmp_path, name):
    proc, out = _cli(tmp_path, [name])
    assert proc.returncode == 3
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    m = ERROR_RE.match(lines[0].removeprefix("flowtap: "))
    assert lines[0].startswith("flowtap: ") and m, lines[0]
    assert m["path"] == str(PCAP_DIR / name) and int(m["offset"]) == BAD[name]
    assert pq.read_table(out).num_rows == 0   # written and sealed all the same


@pytest.mark.skipif(not HAVE_DATA, reason=SKIP_REASON)
def test_cli_bad_files_among_good_ones(tmp_path):
    """Errors end their own file only: the good files around them are all in the output."""
    names = ["dns.pcap", "fuzz-2021-10-13.pcap", "rdp.pcap", "README.txt", "bets.pcapng"]
    proc, out = _cli(tmp_path, names, "all.arrow")
    assert proc.returncode == 3
    lines = proc.stderr.splitlines()
    assert [ERROR_RE.match(x.removeprefix("flowtap: "))["path"] for x in lines] == \
        [str(PCAP_DIR / "fuzz-2021-10-13.pcap"), str(PCAP_DIR / "README.txt")]
    summary = json.loads(proc.stdout)
    assert summary["packets"] == sum(CAPINFOS[n] for n in ("dns.pcap", "rdp.pcap", "bets.pcapng"))
    with open(out, "rb") as f:
        table = pa.ipc.open_file(f).read_all()
    assert table.num_rows == summary["records"]
    # the same flows as the three good files replayed alone
    alone = 0
    for n in ("dns.pcap", "rdp.pcap", "bets.pcapng"):
        res = replay([str(PCAP_DIR / n)], str(tmp_path / f"{n}.parquet"), EngineConfig(observer_host="t"))
        alone += res.flows
    assert summary["flows"] == alone
