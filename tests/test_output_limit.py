"""--max-output-size (issue 7): once the output holds SIZE bytes, no further batch is written; the run goes on
to the end of its input so that the records not written are counted exactly; the file is sealed and readable,
and its counters ("output") and the summary say the limit was reached and how many records were left out.

The rule checked byte for byte: a batch is written while the file holds fewer than SIZE bytes, so the file
stops at the first batch boundary at or past SIZE (it can exceed SIZE by less than one batch plus the seal).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flowgen  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FLOWTAP = [sys.executable, "-m", "probe.cli"]
N = 200_000   # one flow per packet: 3 full batches of 65,536 records, then the flush


def flowtap(*args, check_rc=0):
    r = subprocess.run(FLOWTAP + [str(a) for a in args], capture_output=True, text=True, cwd=REPO)
    if check_rc is not None:
        assert r.returncode == check_rc, r.stderr
    return r


def message_ends(path: Path) -> list[tuple[str, int, int]]:
    """(message type, byte offset after it, rows) of every message of an IPC stream file."""
    out = []
    with pa.memory_map(str(path)) as m:
        src = pa.BufferReader(m.read_buffer())
        mr = pa.ipc.MessageReader.open_stream(src)
        schema = None
        while True:
            try:
                msg = mr.read_next_message()
            except StopIteration:
                break
            if msg.type == "schema":
                schema = pa.ipc.read_schema(msg)
                rows = 0
            else:
                rows = pa.ipc.read_record_batch(msg, schema).num_rows
            out.append((msg.type, src.tell(), rows))
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    d = tmp_path_factory.mktemp("lim")
    pcap = flowgen.write_pcap(d / "in.pcap", N)
    out = d / "full.arrows"
    flowtap("replay", pcap, "-o", out, "--idle-timeout", "1")
    with pa.memory_map(str(out)) as m:
        t = pa.ipc.open_stream(m).read_all().replace_schema_metadata(None)
    return pcap, t, message_ends(out)


def test_limit_stops_at_the_batch_that_crosses_it(tmp_path, full):
    pcap, ref, ref_msgs = full
    assert ref.num_rows == N
    # a limit in the middle of the second batch of the unlimited run
    b1, b2 = [e for typ, e, rows in ref_msgs if typ == "record batch"][:2]
    limit = (b1 + b2) // 2
    out = tmp_path / "lim.arrows"
    r = flowtap("replay", pcap, "-o", out, "--idle-timeout", "1", "--max-output-size", limit, "--json")
    summary = json.loads(r.stdout)
    msgs = message_ends(out)
    data = [(e, rows) for typ, e, rows in msgs if typ == "record batch" and rows]
    before_last = [e for typ, e, _ in msgs][-3]     # end of the message before the last data batch
    # written while below the limit, then stopped: the last data batch started below it and ended past it
    assert len(data) == 2 and before_last < limit <= data[-1][0]
    written = sum(rows for _, rows in data)
    assert written == 2 * 65536
    # the file is sealed, and its records are exactly the first ones of the unlimited run
    with pa.memory_map(str(out)) as m:
        got = pa.ipc.open_stream(m).read_all().replace_schema_metadata(None)
    assert got.equals(ref.slice(0, written))
    # the last (empty) batch carries the final counters: limit reached, every other record counted
    with pa.memory_map(str(out)) as m:
        *_, (last, meta) = pa.ipc.open_stream(m).iter_batches_with_custom_metadata()
    assert last.num_rows == 0
    o = json.loads(meta[b"flowtap.counters"])["output"]
    assert o == {**o, "max_bytes": limit, "limit_reached": True, "records_not_written": N - written,
                 "records_written": written}
    assert summary["output_limit_reached"] is True
    assert summary["counters"]["output"]["records_not_written"] == N - written
    assert summary["records"] == N      # the run itself went to the end of the input
    text = flowtap("replay", pcap, "-o", tmp_path / "lim2.arrows", "--idle-timeout", "1",
                   "--max-output-size", limit).stdout
    assert f"output size limit reached (--max-output-size {limit:,} bytes): {N - written:,} records not written" in text
    insp = flowtap("inspect", out, "--top", "0").stdout
    assert "state: complete" in insp and f"{N - written:,} records in" in insp


@pytest.mark.parametrize("journal", [True, False])
def test_limit_parquet(tmp_path, full, journal):
    """Parquet: sealed and readable; the file metadata says the limit was reached. With the journal the limit
    counts the journal's bytes (what the run holds on disk), without it the Parquet file's."""
    pcap, ref, _ = full
    out = tmp_path / "lim.parquet"
    limit = 1_000_000
    flowtap("replay", pcap, "-o", out, "--idle-timeout", "1", "--max-output-size", "1M",
            *([] if journal else ["--no-parquet-journal"]))
    pf = pq.ParquetFile(out)
    c = json.loads(pf.metadata.metadata[b"flowtap.counters"])["output"]
    t = pf.read().replace_schema_metadata(None)
    assert c["limit_reached"] is True and c["max_bytes"] == limit
    assert t.num_rows == c["records_written"] == 65536   # the first batch alone crosses 1 MB
    assert c["records_not_written"] == N - t.num_rows
    assert t.equals(ref.slice(0, t.num_rows))
    assert not list(tmp_path.glob(".lim*"))


def test_limit_not_reached_changes_nothing(tmp_path, full):
    pcap, ref, _ = full
    out = tmp_path / "f.arrows"
    flowtap("replay", pcap, "-o", out, "--idle-timeout", "1", "--max-output-size", "1G")
    with pa.memory_map(str(out)) as m:
        assert pa.ipc.open_stream(m).read_all().replace_schema_metadata(None).equals(ref)


@pytest.mark.parametrize("text,value", [("100M", 100_000_000), ("1GiB", 1 << 30), ("500k", 500_000),
                                        ("2.5G", 2_500_000_000), ("4096", 4096), ("64KiB", 65536)])
def test_parse_size(text, value):
    from dpi.writer import parse_size
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "-5M", "0"])
def test_bad_size_is_a_usage_error(tmp_path, full, bad):
    pcap, _, _ = full
    r = flowtap("replay", pcap, "-o", tmp_path / "x.arrows", "--max-output-size", bad, check_rc=2)
    assert "--max-output-size" in r.stderr
    assert not list(tmp_path.iterdir())


def test_limit_live_capture(tmp_path):
    """`flowtap capture --max-output-size 1`: only the first batch (the first coverage snapshot, written before
    any flow ended) fits; the 20 UDP flows sent afterwards are counted as not written, the file is sealed and
    its last batch says so; file rows + records not written = records the engine exported."""
    from test_live_common import Capture, VethPair, in_ns, require_live
    require_live()
    from test_interrupt import UDP_SENDER, complete_batches, tmp_name, wait_for
    out = tmp_path / "live.arrows"
    with VethPair() as pair, Capture(pair.ns_a, [pair.if_a], out,
                                     extra=["--idle-timeout", "1", "--max-output-size", "1"]) as cap:
        # the first flush (1 s) writes the first snapshot, which fills the 1-byte budget: wait for it
        tmpf = tmp_name(out, cap.proc.pid)
        wait_for(lambda: complete_batches(tmpf, "ipc_stream") >= 1, cap.proc, f"a first batch in {tmpf}")
        in_ns(pair.ns_a, sys.executable, "-c", UDP_SENDER, pair.ip_b, 20, 5, timeout=60)
        # expired at a flush or flushed at the stop, the flows are counted either way
        summary = cap.stop(signal.SIGTERM)
    o = summary["counters"]["output"]
    with pa.memory_map(str(out)) as m:
        items = list(pa.ipc.open_stream(m).iter_batches_with_custom_metadata())
    rows = sum(b.num_rows for b, _ in items)
    assert len(items) == 2 and rows == 0       # the first snapshot, then the final counters
    last = json.loads(items[-1][1][b"flowtap.counters"])
    assert last["output"]["limit_reached"] is True and o["limit_reached"] is True
    assert last["output"]["records_not_written"] == o["records_not_written"] == summary["counters"]["records_exported"]
    assert o["records_not_written"] >= 20
