"""The replay reader parses common Ethernet frames with the fast path (ext/ft_parse_fast.h, also the live
probe's entry program) and everything else with ft_parse(): the fast path must give exactly ft_parse()'s
record for every frame it takes, and decline the rest. Checked on frames at each of its edges (scapy) and on
every frame of the nDPI Ethernet captures, whole and cut short by a snap length (truncated records)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dpi._reader import PKT_DTYPE, parse_frame

DATA = Path(os.environ.get("FLOWTAP_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def _same(a, b) -> list[str]:
    return [f for f in PKT_DTYPE.names if not np.array_equal(a[f], b[f])]


def test_fast_path_edges():
    pytest.importorskip("scapy.all")
    from fastpath_frames import edge_frames
    for label, frame, fast in edge_frames():
        general = parse_frame(frame, 1, ts_ns=5)
        quick = parse_frame(frame, 1, ts_ns=5, path=1)
        assert (quick is not None) == fast, label
        if quick is not None:
            assert _same(quick, general) == [], label
        assert _same(parse_frame(frame, 1, ts_ns=5, path=2), general) == [], label


@pytest.mark.skipif(not (DATA / "ndpi" / "ether_files.txt").exists(), reason="../shared/data/ndpi not present")
def test_fast_path_equals_ft_parse_on_ndpi_frames():
    dpkt = pytest.importorskip("dpkt")
    whole = whole_taken = cut_taken = 0
    bad = []
    for name in (DATA / "ndpi" / "ether_files.txt").read_text().split():
        with open(DATA / "ndpi" / "pcap" / name, "rb") as f:
            try:
                rd = dpkt.pcapng.Reader(f) if name.endswith("pcapng") else dpkt.pcap.Reader(f)
                frames = [bytes(buf) for _ts, buf in rd]
            except Exception:   # the deliberately malformed captures: the frames read so far count
                continue
        for i, frame in enumerate(frames):
            # whole, and (every 5th frame) cut by snap lengths ending inside the L2/L3/L4 headers and the payload
            for cap in (len(frame),) + ((16, 34, 40, 54, 60, 66, 80) if i % 5 == 0 else ()):
                if cap > len(frame):
                    continue
                quick = parse_frame(frame[:cap], 1, wire_len=len(frame), path=1)
                whole += cap == len(frame)
                if quick is None:
                    continue
                whole_taken += cap == len(frame)
                cut_taken += cap < len(frame)
                diff = _same(quick, parse_frame(frame[:cap], 1, wire_len=len(frame)))
                if diff and len(bad) < 10:
                    bad.append((name, i, cap, diff))
    assert bad == []
    # the check means something only if the fast path took most whole frames (nDPI's captures are mostly
    # plain TCP/UDP over Ethernet), declined some, and took cut ones too (truncated records)
    assert whole > 80_000 and 0.5 * whole < whole_taken < whole and cut_taken > 10_000, \
        (whole, whole_taken, cut_taken)
