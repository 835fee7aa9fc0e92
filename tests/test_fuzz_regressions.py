"""Fuzzing without atheris: the saved fuzz cases (tests/fuzz_cases/<target>/<case>) replayed through the same
target functions (fuzz/targets.py) with the normal build, and the fuzz targets' own oracles checked on inputs
whose results are known from scapy and arithmetic, so that a target that silently checks nothing fails here.

A case file holds the raw fuzzer input of its target; <case>.json beside it, when present, holds what the
input must give (checked by the test named in it). docs/fuzzing.md says how a finding becomes a case.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "fuzz_cases"
sys.path.insert(0, str(ROOT / "fuzz"))

import targets  # noqa: E402
from dpi._reader import REASON_NAMES, parse_frame  # noqa: E402
from dpi.capture import CaptureError  # noqa: E402

scapy = pytest.importorskip("scapy.all")
from scapy.all import IP, TCP, UDP, Ether, raw  # noqa: E402


def case_files():
    return sorted(p for p in CASES.glob("*/*") if p.is_file() and p.suffix != ".json")


@pytest.mark.parametrize("case", case_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fuzz_case(case):
    """The input that once crashed, hung or broke an invariant now runs through its target cleanly, and
    gives what its .json says."""
    fn = targets.target(case.parent.name)
    data = case.read_bytes()
    try:
        fn(data)
    except CaptureError:
        assert case.parent.name == "e2e", "only the end-to-end target reports malformed captures by raising"
    expect_file = case.with_suffix(".json")
    if expect_file.exists():
        expect = json.loads(expect_file.read_text())
        check_expectation(case.parent.name, data, expect)


@pytest.fixture(scope="module")
def asan_replay(tmp_path_factory):
    """tests/fuzz_cases/asan_replay.c with ext/ft_reader.c, built with AddressSanitizer and UBSan."""
    cc = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("replay") / "asan_replay"
    r = subprocess.run([cc, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                        "-I", str(ROOT / "ext"), "-std=gnu11", str(CASES / "asan_replay.c"),
                        str(ROOT / "ext" / "ft_reader.c"), "-o", str(exe)], capture_output=True, text=True)
    if r.returncode != 0 and "sanitize" in r.stderr:
        pytest.skip(f"the compiler cannot build with sanitizers: {r.stderr[:200]}")
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.parametrize("case", [c for c in case_files() if c.parent.name != "e2e"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fuzz_case_under_asan(case, asan_replay, tmp_path):
    """The same input through the C code alone, every piece in a heap block of its exact size: a read past
    it, or undefined behaviour, fails here without atheris."""
    target, data = case.parent.name, case.read_bytes()
    inp = tmp_path / "input"
    if target == "parser":
        inp.write_bytes(data[1:])
        args = ["parser", str(targets.LINKTYPES[data[0] % len(targets.LINKTYPES)]), str(inp)]
    elif target == "reader":
        inp.write_bytes(data[2:])
        args = ["reader", str(inp)]
    elif target == "reader-compressed":  # decompression is Python's (zlib, zstandard): the C reader gets the capture
        inp.write_bytes(data[3:])
        args = ["reader", str(inp)]
    else:
        _, proto, name = target.split("-", 2)
        inp.write_bytes(b"".join(struct.pack("<BI", arg, len(v)) + v for v, arg in targets.dpi_views(proto, data)))
        args = ["dpi", proto, name, str(inp)]
    r = subprocess.run([str(asan_replay)] + args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ok"), (r.stdout, r.stderr[-3000:])
    if target.startswith("dpi-") and case.with_suffix(".json").exists():
        answers = [int(a) for a in r.stdout.split()[2:]]
        assert answers == json.loads(case.with_suffix(".json").read_text())["answers"]


def check_expectation(target, data, expect):
    if target == "parser":
        rec = parse_frame(targets.exact(data[1:]), targets.LINKTYPES[data[0] % len(targets.LINKTYPES)])
        for k, v in expect.items():
            got = REASON_NAMES[int(rec[k])] if k == "reason" else int(rec[k])
            assert got == v, (k, got, v)
    elif target == "reader":
        recs, st, err_off = targets.read_capture(data[2:])
        assert {"records": len(recs), "status": st, "error_offset": err_off} == expect
    elif target.startswith("dpi-"):
        _, proto, name = target.split("-", 2)
        answers, fields, unterminated = targets.dpi_dissect(proto, name, targets.dpi_views(proto, data))
        assert {"answers": answers, "fields": fields} == expect


# ---- the oracles of the targets, on inputs with known results ---------------------------------------------

def http_frame(payload=b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n", sport=40001):
    return raw(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=80, flags="PA") / payload)


def test_parser_target_accepts_a_scapy_frame_and_checks_payload_bounds():
    payload = b"GET / HTTP/1.1\r\n\r\n"
    frame = http_frame(payload)
    targets.parser(bytes([targets.LINKTYPES.index(1)]) + frame)  # raises on a broken invariant
    rec = parse_frame(targets.exact(frame), 1)
    assert (int(rec["payload_off"]), int(rec["payload_cap"])) == (14 + 20 + 20, len(payload))
    bad = rec.copy()
    bad["cap_len"] = 14 + 20 + 20 + len(payload) - 1  # one byte short of the payload it claims
    with pytest.raises(AssertionError):
        targets.check_record(bad)


def test_parser_target_checks_the_fast_path_against_ft_parse():
    """The parser target also runs the fast path on Ethernet frames and fails when a frame it takes gets a
    record that differs from ft_parse()'s in any field."""
    frame = http_frame()
    targets.parser(bytes([targets.LINKTYPES.index(1)]) + frame)
    general = parse_frame(targets.exact(frame), 1)
    quick = parse_frame(targets.exact(frame), 1, path=1)
    assert quick is not None   # a plain TCP/IPv4 frame: the fast path takes it
    targets.same_as_general(quick, general)
    quick["ttl"] = (int(quick["ttl"]) + 1) % 256
    with pytest.raises(AssertionError, match="ttl"):
        targets.same_as_general(quick, general)
    targets.same_as_general(None, general)   # declined: nothing to compare


def test_reader_target_same_records_for_every_split_point():
    """ext/ft_reader.h promises identical results whatever the buffer pieces are: checked at every byte."""
    frames = [http_frame(sport=40000 + i) for i in range(3)]
    cap = targets.frames_to_pcap(1, frames)
    whole, st, err = targets.read_capture(cap)
    assert (len(whole), st, err) == (3, targets.FT_RD_END, None)
    # pcap header 24 bytes, each record header 16 bytes before its frame
    step = 16 + len(frames[0])
    assert list(whole["frame_off"]) == [24 + 16, 24 + 16 + step, 24 + 16 + 2 * step]
    assert list(whole["cap_len"]) == [len(f) for f in frames]
    for k in range(len(cap) + 1):
        parts, st2, err2 = targets.read_capture(cap, k)
        assert (st2, err2) == (st, err) and parts.tobytes() == whole.tobytes(), k
    for k in range(0, 65536, 997):  # the target's own use: split point from the input's first two bytes
        targets.reader(struct.pack(">H", k) + cap)


def test_reader_target_cut_capture_reports_the_cut_record():
    frames = [http_frame(sport=40000 + i) for i in range(3)]
    cap = targets.frames_to_pcap(1, frames)[:-5]
    recs, st, err = targets.read_capture(cap)
    assert (len(recs), st, err) == (2, targets.FT_RD_ERROR, 24 + 2 * (16 + len(frames[0])))
    for k in (0, 30, len(cap) - 1, len(cap)):
        recs2, st2, err2 = targets.read_capture(cap, k)
        assert (len(recs2), st2, err2) == (2, targets.FT_RD_ERROR, 24 + 2 * (16 + len(frames[0]))), k


def test_reader_compressed_target_same_records_as_the_plain_capture(tmp_path):
    """gzip and zstd, in 1-16 members/frames, with and without checksums and skippable frames, at every chunk
    size: CaptureReader gives the 3 records scapy built, with the frames' exact bytes, as the plain file does."""
    frames = [http_frame(sport=40000 + i) for i in range(3)]
    cap = targets.frames_to_pcap(1, frames)
    plain = tmp_path / "c.pcap"
    plain.write_bytes(cap)
    recs, got, err = targets.read_file(str(plain))
    assert (got, err) == (frames, None) and len(recs) == 3
    for ctrl in range(128):           # bit 7 clear: a valid compressed stream
        targets.reader_compressed(bytes([ctrl]) + struct.pack(">H", 0) + cap)
    # cut short anywhere: a prefix of the records, never anything else
    for cut in range(0, 400, 7):
        for ctrl in (32, 33, 32 | 30, 33 | 30 | 64):
            targets.reader_compressed(bytes([ctrl]) + struct.pack(">H", cut) + cap)
    # a corrupt stream behind each magic: only CaptureError, which the target expects
    for ctrl in (128, 129):
        targets.reader_compressed(bytes([ctrl]) + struct.pack(">H", 0) + cap)


def test_reader_compressed_oracle_catches_differences():
    """compare_reads fails on a missing or changed record, a different ending, or a cut read that is not a
    prefix: the target checks something."""
    a, b, c = b"r1", b"r2", b"r3"
    plain = ([a, b, c], [b"f1", b"f2", b"f3"], None)
    targets.compare_reads(plain, ([a, b, c], [b"f1", b"f2", b"f3"], None), cut=False)
    targets.compare_reads(plain, ([a, b], [b"f1", b"f2"], (90, "cut")), cut=True)
    with pytest.raises(AssertionError):
        targets.compare_reads(plain, ([a, b], [b"f1", b"f2"], None), cut=False)
    with pytest.raises(AssertionError):
        targets.compare_reads(plain, ([a, b, c], [b"f1", b"fX", b"f3"], None), cut=False)
    with pytest.raises(AssertionError):
        targets.compare_reads(plain, ([a, b, c], [b"f1", b"f2", b"f3"], (90, "bad")), cut=False)
    with pytest.raises(AssertionError):
        targets.compare_reads(plain, ([a, c], [b"f1", b"f3"], None), cut=True)


def test_dpi_views_layout():
    payload = bytes(range(10))
    # two split points (4, 7), last view final, views 1 from the responder (bits 3.. = 0b010)
    data = bytes([2 | 4 | (0b010 << 3)]) + struct.pack(">HH", 7, 4) + payload
    assert targets.dpi_views("tcp", data) == [(payload[:4], 0), (payload[:7], 1), (payload, 2)]
    assert targets.dpi_views("udp", data) == [(payload[:4], 0), (payload[4:7], 1), (payload[7:], 2)]


def test_dpi_dissect_one_named_dissector():
    req = b"GET /metrics HTTP/1.1\r\nHost: Example.ORG\r\nUser-Agent: t/1\r\n\r\n"
    # cut after 10 bytes: the growing TCP view first waits, then detects
    data = bytes([1]) + struct.pack(">H", 10) + req
    answers, fields, unterminated = targets.dpi_dissect("tcp", "http", targets.dpi_views("tcp", data))
    assert answers == [2, 1] and unterminated == []
    assert (fields["http_method"], fields["http_path"], fields["server_name"]) == ("GET", "/metrics", "example.org")
    # the same bytes given to another dissector only: TLS excludes them at once
    answers, fields, _ = targets.dpi_dissect("tcp", "tls", [(req, 0)])
    assert answers == [0] and fields == {}
    # NTP (port-gated: the entry's port 123 is used) on a 48-byte NTPv4 client request (RFC 5905 7.3)
    answers, fields, _ = targets.dpi_dissect("udp", "ntp", [(bytes([0x23]) + bytes(47), 0)])
    assert answers == [1] and fields == {"version": "NTPv4"}


def test_every_dissector_has_a_target():
    from dpi._flowtable import dpi_dissectors
    names = targets.all_targets()
    for proto, table in dpi_dissectors().items():
        for name, _ in table:
            assert f"dpi-{proto}-{name}" in names
    assert {"parser", "reader", "e2e"} <= set(names)


def test_e2e_target_meters_a_capture_with_dpi():
    frames = [http_frame(sport=40000 + i) for i in range(3)]
    data = bytes([targets.LINKTYPES.index(1)]) + b"".join(struct.pack(">H", len(f)) + f for f in frames)
    from dpi._flowtable import dpi_labels
    flows, dpi = targets.e2e(data)
    assert sorted(int(p) for p in flows["src_port"]) == [40000, 40001, 40002]
    assert [int(n) for n in flows["src_packets"]] == [1, 1, 1]
    assert len(dpi) == len(flows) == 3   # one DPI part per record while DPI is on
    assert {dpi_labels()[int(a)] for a in dpi["dpi_app"]} == {"http"}
    # a frame length field beyond the input: the last frame is cut short, and still metered
    flows, _ = targets.e2e(data[:-10])
    assert len(flows) == 3
