"""One parser, two builds: every frame of the nDPI Ethernet captures goes through the BPF programs
(BPF_PROG_TEST_RUN on ft_xdp and ft_tc_ingress: the staged, tail-called driver of ext/ft_parse.h's
functions) and through the replay parser (dpi._reader.parse_frame, ft_parse() itself); the records must be
identical, field by field, except the fields the two sources fill differently by design:
ts_ns (kernel clock vs file), frame_off and payload_cap (live: the snippet in the batch's data buffer), iface
and direction (hook vs file). Root only."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fastpath_frames import edge_frames as _edge_frames
from test_live_common import live_skip_reason

pytestmark = [pytest.mark.root, pytest.mark.ndpi,
              pytest.mark.skipif(live_skip_reason() is not None, reason=live_skip_reason() or "")]

DATA = Path(os.environ.get("FLOWTAP_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
SNAP = 128
# live records by design: cap_len = payload_off + payload_cap (user space holds only the snippet's frame bytes)
IGNORED = {"ts_ns", "frame_off", "payload_cap", "iface", "direction", "cap_len"}
MAX_TEST_RUN = 3000  # BPF_PROG_TEST_RUN takes one page less head- and tailroom (linear XDP / skb data)


def _frames():
    import dpkt
    names = (DATA / "ndpi" / "ether_files.txt").read_text().split()
    for name in names:
        with open(DATA / "ndpi" / "pcap" / name, "rb") as f:
            try:
                rd = dpkt.pcapng.Reader(f) if name.endswith("pcapng") else dpkt.pcap.Reader(f)
                for _ts, buf in rd:
                    yield name, bytes(buf)
            except Exception:  # the deliberately malformed captures: what was read so far counts
                continue


def _equal(a, b) -> bool:
    return bool(np.all(a == b)) if isinstance(a, np.ndarray) else a == b


@pytest.mark.skipif(not (DATA / "ndpi" / "ether_files.txt").exists(), reason="../shared/data/ndpi not present")
def test_kernel_records_equal_replay_parser_records_on_ndpi_frames():
    from dpi._reader import PKT_DTYPE, parse_frame
    from probe.live import BpfConfig, Probe, test_run

    probe = Probe(BpfConfig(snap_len=SNAP, ring_bytes=1 << 24))
    ring = probe.ring_reader()
    cap = 4096
    pkts = np.zeros(cap, PKT_DTYPE)
    data = np.zeros(cap * SNAP, np.uint8)
    snip = np.zeros(cap, np.uint16)
    fields = [f for f in PKT_DTYPE.names if f not in IGNORED]
    checked = skipped = cut = 0
    mismatches = []
    reasons = {}
    tunnelled = 0
    try:
        pending = []  # (name, frame) in the order their records enter the ring
        def compare():
            nonlocal checked, tunnelled, cut
            while pending:
                n, used, _more = ring.drain(pkts, data, snip, 0)
                assert n > 0, "a test run wrote no record"
                for i in range(n):
                    name, frame = pending.pop(0)
                    ref = parse_frame(np.frombuffer(frame, np.uint8), 1)
                    got = pkts[i]
                    bad = [f for f in fields if not _equal(got[f], ref[f])]
                    # the snippet: the payload's first bytes, as many as the record's flow gets
                    s = int(snip[i])
                    cut += 0 < s < int(ref["payload_len"])   # the snap length hit: the ring counts it
                    if int(got["cap_len"]) != int(got["payload_off"]) + s or int(got["payload_cap"]) != s:
                        bad.append("cap_len")
                    if s:
                        off = int(ref["payload_off"])
                        start = (int(got["frame_off"]) + off) % (1 << 64)
                        if bytes(data[start:start + s]) != frame[off:off + s] or s > min(SNAP, int(ref["payload_cap"])):
                            bad.append("snippet")
                    if bad and len(mismatches) < 20:
                        mismatches.append((name, bad, {f: (got[f], ref[f]) for f in bad if f != "snippet"}))
                    checked += 1
                    tunnelled += int(ref["tunnel_depth"]) > 0
                    r = int(ref["reason"])
                    reasons[r] = reasons.get(r, 0) + 1

        for name, frame in _frames():
            if not 14 <= len(frame) <= MAX_TEST_RUN:
                skipped += 1
                continue
            for prog in ("ft_xdp", "ft_tc_ingress"):
                test_run(probe.fd(prog), frame)
                pending.append((name, frame))
            if len(pending) >= cap:
                compare()
        compare()
        snippets_cut = ring.counters()["snippets_cut"]
    finally:
        ring.close()
        probe.close()
    assert not mismatches, mismatches
    assert cut > 0 and snippets_cut == cut
    # sanity of the corpus walk itself: most frames parse to the end, and tunnels were among them
    assert checked > 150_000 and reasons.get(0, 0) > 0.9 * checked and tunnelled > 0
    print(f"{checked} records compared ({skipped} frames outside 14..{MAX_TEST_RUN} bytes), reasons {reasons}")


def test_fast_path_edges_equal_replay_parser_records():
    """Each frame at an edge of the fast path through both entries: the record equals the replay parser's, and
    fast_parsed says which path parsed it (so both paths are exercised on the frames meant for them)."""
    from dpi._reader import PKT_DTYPE, parse_frame
    from probe.live import BpfConfig, Probe, test_run

    probe = Probe(BpfConfig(snap_len=SNAP, ring_bytes=1 << 22))
    ring = probe.ring_reader()
    pkts = np.zeros(8, PKT_DTYPE)
    data = np.zeros(8 * SNAP, np.uint8)
    snip = np.zeros(8, np.uint16)
    fields = [f for f in PKT_DTYPE.names if f not in IGNORED]
    mismatches = []
    frames = _edge_frames()
    try:
        for label, frame, fast in frames:
            before = probe.counters()["fast_parsed"]
            # the kernel's skb test run refuses an IPv4 frame shorter than an IPv4 header (EINVAL): XDP only
            progs = ("ft_xdp",) if label in ("ip header cut", "ethernet only") else ("ft_xdp", "ft_tc_ingress")
            for prog in progs:
                test_run(probe.fd(prog), frame)
            took = probe.counters()["fast_parsed"] - before
            n, _used, _more = ring.drain(pkts, data, snip, 0)
            assert n == len(progs), (label, n)
            ref = parse_frame(np.frombuffer(frame, np.uint8), 1)
            for i in range(n):
                bad = [f for f in fields if not _equal(pkts[i][f], ref[f])]
                s = int(snip[i])
                if s:
                    off = int(ref["payload_off"])
                    start = (int(pkts[i]["frame_off"]) + off) % (1 << 64)
                    if bytes(data[start:start + s]) != frame[off:off + s]:
                        bad.append("snippet")
                if s != min(SNAP, int(ref["payload_cap"])) and int(ref["reason"]) in (0, 20):
                    bad.append("snippet_len")
                if bad:
                    mismatches.append((label, i, {f: (pkts[i][f], ref[f]) for f in bad if f in fields}))
            if took != (len(progs) if fast else 0):
                mismatches.append((label, "fast_parsed", took))
    finally:
        ring.close()
        probe.close()
    assert not mismatches, mismatches
    # the frames meant for each path end where the replay parser says (not all in one reason by accident)
    reasons = {int(parse_frame(np.frombuffer(fr, np.uint8), 1)["reason"]) for _l, fr, _f in frames}
    assert len(reasons) >= 8, reasons
