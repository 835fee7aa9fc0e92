"""Hostile capture files through the reader (ext/ft_reader.c via dpi._reader.CaptureReader) and the engine
(dpi.engine.Engine, dpi.replay / `flowtap replay`): issue 7, "systematic malformation tests".

- random byte corruption of the nDPI captures: FLOWTAP_MALFORM_VARIANTS variants (default 5000, fixed
  seed), in chunks, each chunk in its own process with a timeout (a crash or a hang fails the test and names
  the variant, which is rebuilt and saved for replay); every variant is read mapped, some also streamed in
  small pieces, and metered by the engine with DPI on;
- pcap records with a captured length above the snap length, above the reader's 256 KiB frame limit and
  above 256 MiB; pcapng blocks whose leading and trailing lengths disagree, whose length is not a multiple
  of 4, below the block type's minimum or beyond the file; timestamps going backwards;
- no allocation in proportion to a length field: peak RSS of a child process reading a file whose record
  claims 256 MiB or whose block claims (or really has) 1 GiB, against the same child reading a small file.

Expected values (offsets, messages, counts) come from how each file was written: struct layouts and
arithmetic. docs/malformed.md lists what is tried and the reason each case gets.
"""
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLOWTAP_SHARED_DATA", ROOT / ".." / "shared" / "data"))
NDPI_PCAP = SHARED / "ndpi" / "pcap"
PY = sys.executable

VARIANTS = int(os.environ.get("FLOWTAP_MALFORM_VARIANTS", "5000"))
CHUNK = 500                # variants per child process
CHUNK_TIMEOUT_S = 300      # hang guard per chunk: a chunk of 500 takes ~4 s of CPU
FLUSH_EVERY = 25           # variants metered between two engine flushes
SEED = 20261128
MAX_INPUT_BYTES = 64 << 10  # corrupt the captures up to this size (about 60 % of the corpus)

NS = 10**9


# ---------------------------------------------------------------------------------------------------------
# writers (struct layouts from draft-ietf-opsawg-pcap / -pcapng)

def eth_udp(i=0, payload=b"hello"):
    """An Ethernet/IPv4/UDP frame built by hand: 14 + 20 + 8 + len(payload) bytes."""
    udp = struct.pack(">HHHH", 1000 + i, 53, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2])) + udp
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip


def pcap_file(records, snaplen=65535, linktype=1):
    """records: (ts_ns, frame, caplen field or None, wire length or None); microsecond pcap, little-endian."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)
    for ts, frame, cap, wire in records:
        out += struct.pack("<IIII", ts // NS, ts % NS // 1000, len(frame) if cap is None else cap,
                           len(frame) if wire is None else wire) + frame
    return out


def pad4(b):
    return b + bytes(-len(b) % 4)


def block(btype, body, tl=None, trail=None):
    body = pad4(body)
    n = 12 + len(body)
    return struct.pack("<II", btype, n if tl is None else tl) + body + struct.pack("<I", n if trail is None else trail)


SHB = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
IDB = block(1, struct.pack("<HHI", 1, 0, 0))


def epb(frame, ts_us=1, **kw):
    return block(6, struct.pack("<IIIII", 0, ts_us >> 32, ts_us & 0xFFFFFFFF, len(frame), len(frame)) + frame, **kw)


def read_all(path, **kw):
    """(frames, counters, CaptureError or None) of a capture."""
    from dpi.capture import CaptureError, CaptureReader
    frames, err = [], None
    with CaptureReader(path, **kw) as rd:
        try:
            for pkts, data in rd:
                for p in pkts:
                    off, cap = int(p["frame_off"]), int(p["cap_len"])
                    frames.append((int(p["ts_ns"]), int(p["wire_len"]), bytes(data[off:off + cap])))
        except CaptureError as e:
            err = e
        counters = rd.counters
    return frames, counters, err


# ---------------------------------------------------------------------------------------------------------
# classic pcap lengths


def test_caplen_above_snaplen_is_counted(tmp_path):
    """Captured length above the file's snap length (but under the 256 KiB frame limit): accepted, counted
    under over_snaplen; above the original length: counted under caplen_over_wire, wire taken as captured."""
    big = eth_udp(0, b"b" * 200)  # 242 bytes in a file announcing a snap length of 100
    small = eth_udp(1)
    data = pcap_file([(1 * NS, big, None, None), (2 * NS, small, None, len(small) - 5)], snaplen=100)
    p = tmp_path / "a.pcap"
    p.write_bytes(data)
    frames, c, err = read_all(p)
    assert err is None
    assert [f[2] for f in frames] == [big, small]
    assert [f[1] for f in frames] == [len(big), len(small)]
    assert (c["over_snaplen"], c["caplen_over_wire"], c["packets"]) == (1, 1, 2)
    # pcapng: the interface's snap length (IDB) is the limit
    idb64 = block(1, struct.pack("<HHI", 1, 0, 64))
    p = tmp_path / "a.pcapng"
    p.write_bytes(SHB + idb64 + epb(big) + epb(small))
    frames, c, err = read_all(p)
    assert err is None and [f[2] for f in frames] == [big, small]
    assert (c["over_snaplen"], c["caplen_over_wire"], c["packets"]) == (1, 0, 2)


@pytest.mark.parametrize("caplen", [(256 << 10) + 1, (256 << 20) + 1, 0x7FFFFFFF, 0xFFFFFFFF])
def test_caplen_above_frame_limit_is_a_named_error(tmp_path, caplen):
    """A record claiming more than 256 KiB (libpcap's MAXIMUM_SNAPLEN), 256 MiB or 4 GiB: the file ends there
    with the offset and the claim named; the records before it are delivered."""
    good = [eth_udp(i) for i in range(3)]
    head = pcap_file([(i * NS, f, None, None) for i, f in enumerate(good)])
    bad_at = len(head)
    data = head + struct.pack("<IIII", 9, 0, caplen, caplen) + b"x" * 100
    p = tmp_path / "big.pcap"
    p.write_bytes(data)
    for kw in ({}, {"use_mmap": False, "chunk_size": 7}):
        frames, c, err = read_all(p, **kw)
        assert [f[2] for f in frames] == good
        assert (err.offset, err.message) == (
            bad_at, f"pcap record at offset {bad_at}: captured length {caplen} exceeds {256 << 10}")


def test_file_ends_inside_a_record(tmp_path):
    good = eth_udp(0)
    data = pcap_file([(NS, good, None, None)]) + struct.pack("<IIII", 2, 0, 500, 500) + b"y" * 10
    p = tmp_path / "cut.pcap"
    p.write_bytes(data)
    frames, _, err = read_all(p)
    assert [f[2] for f in frames] == [good]
    assert err.message == (f"pcap record at offset {24 + 16 + len(good)}: file ends inside the packet data "
                           f"(10 of 500 captured bytes)")


# ---------------------------------------------------------------------------------------------------------
# pcapng block lengths

def _ng_cases():
    f0, f1 = eth_udp(0), eth_udp(1)
    head = SHB + IDB + epb(f0)
    at = len(head)
    e = epb(f1)
    tl = len(e)
    cases = {
        "trailer_disagrees": (e[:-4] + struct.pack("<I", tl + 8),
                              f"block total length {tl} disagrees with the trailing copy {tl + 8}"),
        "trailer_zero": (e[:-4] + bytes(4), f"block total length {tl} disagrees with the trailing copy 0"),
    }
    for delta in (1, 2, 3):
        cases[f"not_multiple_of_4_{delta}"] = (struct.pack("<II", 6, tl + delta) + e[8:],
                                               f"block total length {tl + delta} is not a multiple of 4")
    for btype, name, minimum in ((0x0A0D0D0A, "section header", 28), (1, "interface description", 20),
                                 (6, "enhanced packet", 32), (3, "simple packet", 16), (2, "packet", 32),
                                 (0x0BAD, "unknown", 12)):
        below = minimum - 4
        body = struct.pack("<I", 0x1A2B3C4D) if btype == 0x0A0D0D0A else bytes(4)
        blk = struct.pack("<II", btype, below) + body + bytes(64)
        cases[f"below_minimum_{btype:#x}"] = (blk, f"block total length {below} is less than {minimum} "
                                                   f"({name} block, type {btype:#x})")
    cases["beyond_file"] = (e[:-20], f"file ends inside the block ({tl - 20} of {tl} bytes)")
    cases["epb_claims_1gib"] = (struct.pack("<II", 6, 1 << 30) + e[8:],
                                f"block total length {1 << 30} exceeds {(256 << 10) + 65536} (enhanced packet block)")
    big_cap = bytearray(e)
    struct.pack_into("<I", big_cap, 20, 1 << 30)
    cases["epb_caplen_1gib"] = (bytes(big_cap), f"captured length {1 << 30} exceeds {256 << 10}")
    struct.pack_into("<I", big_cap, 20, len(f1) + 100)
    cases["epb_caplen_beyond_block"] = (bytes(big_cap), f"captured length {len(f1) + 100} does not fit in block "
                                                        f"total length {tl}")
    # a block the reader skips (custom block 0x40000BAD), 1 GiB long in a file of a few hundred bytes
    cases["skipped_block_claims_1gib"] = (struct.pack("<II", 0x40000BAD, 1 << 30) + bytes(16),
                                          f"file ends inside the block (24 of {1 << 30} bytes)")
    return head, at, f0, cases


NG_HEAD, NG_AT, NG_F0, NG_CASES = _ng_cases()


@pytest.mark.parametrize("name", list(NG_CASES))
def test_pcapng_block_length_faults(tmp_path, name):
    """Each fault ends the file at the faulty block with a message naming it; the packet before it is
    delivered; mapped and streamed (7-byte pieces) readings agree."""
    blk, msg = NG_CASES[name]
    p = tmp_path / f"{name}.pcapng"
    p.write_bytes(NG_HEAD + blk)
    for kw in ({}, {"use_mmap": False, "chunk_size": 7}):
        frames, c, err = read_all(p, **kw)
        assert [f[2] for f in frames] == [NG_F0], kw
        assert err is not None, kw
        assert (err.offset, err.message) == (NG_AT, f"pcapng block at offset {NG_AT}: {msg}"), kw


# ---------------------------------------------------------------------------------------------------------
# timestamps going backwards, and malformed packets, through `flowtap replay`


def test_timestamps_backwards_counted_by_replay(tmp_path):
    """The engine counts packets more than 1 s older than the newest one seen (packets_ts_backwards); a
    small reordering (under 1 s, as merged captures have) is not an anomaly."""
    from dpi.engine import EngineConfig
    from dpi.replay import replay
    ts = [100 * NS, 50 * NS, 100 * NS + NS // 2, 99 * NS + 6 * NS // 10, 10 * NS, 200 * NS, 198 * NS + NS // 10]
    # newest so far:   100     100        100.5                100.5           100.5   200       200
    # behind by:         -      50            -                  0.9            90.5     -        1.9
    want_backwards = 3
    p = tmp_path / "back.pcap"
    p.write_bytes(pcap_file([(t, eth_udp(i), None, None) for i, t in enumerate(ts)]))
    res = replay([str(p)], str(tmp_path / "out.arrows"), EngineConfig(observer_host="t", dpi_budget=0))
    assert res.errors == []
    assert res.counters["packets_ts_backwards"] == want_backwards
    assert res.counters["packets_seen"] == len(ts)


def _frame_with_bad_tcp_option():
    tcp = struct.pack(">HHIIBBHHH", 1111, 80, 1, 0, 6 << 4, 0x18, 1000, 0, 0) + b"\x08\x00\x00\x00"  # TS len 0
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, bytes([10, 1, 0, 1]),
                     bytes([10, 1, 0, 2])) + tcp
    return eth_udp()[:14] + ip


def _frame_with_bad_ip_option():
    ip = struct.pack(">BBHHHBBH4s4s", 0x46, 0, 24 + 8, 0, 0, 64, 17, 0, bytes([10, 2, 0, 1]),
                     bytes([10, 2, 0, 2])) + b"\x44\x00\x00\x00" + struct.pack(">HHHH", 1, 2, 8, 0)
    return eth_udp()[:14] + ip


def test_replay_names_every_anomaly(tmp_path):
    """A capture holding one frame per anomaly through `flowtap replay --json`: each is counted under its
    reason, the not-metered ones apart, the reader's anomalies in the reader counters."""
    good = eth_udp(0)
    bad_ihl = bytearray(eth_udp(1))
    bad_ihl[14] = 0x43
    records = [
        (1 * NS, good, None, None),                                 # ok
        (2 * NS, _frame_with_bad_tcp_option(), None, None),        # bad_tcp_options, metered
        (3 * NS, _frame_with_bad_ip_option(), None, None),         # bad_ipv4_options, metered
        (4 * NS, bytes(bad_ihl), None, None),                       # bad_ipv4_ihl, not metered
        (5 * NS, good[:30], None, len(good)),                       # truncated_l3 (cut by the snap length)
        (6 * NS, good + b"p" * 40, None, None),                     # over the snap length of 64
        (7 * NS, good, None, None),
    ]
    p = tmp_path / "anomalies.pcap"
    p.write_bytes(pcap_file(records, snaplen=64))
    out = subprocess.run([PY, "-m", "probe.cli", "replay", str(p), "-o", str(tmp_path / "f.arrows"), "--json",
                          "--no-progress", "--dpi-budget", "0"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    c = json.loads(out.stdout)["counters"]
    assert c["parse_reasons"] == {"ok": 3, "bad_tcp_options": 1, "bad_ipv4_options": 1, "bad_ipv4_ihl": 1,
                                  "truncated_l3": 1}
    assert c["not_metered_by_reason"] == {"bad_ipv4_ihl": 1, "truncated_l3": 1}
    assert (c["packets_seen"], c["packets_metered"]) == (7, 5)
    assert (c["reader"]["truncated"], c["reader"]["over_snaplen"]) == (1, 1)
    text = subprocess.run([PY, "-m", "probe.cli", "replay", str(p), "-o", str(tmp_path / "g.arrows"),
                           "--no-progress", "--dpi-budget", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120).stdout
    assert "packets not metered: 2 (" in text and "bad_ipv4_ihl 1" in text and "truncated_l3 1" in text
    assert "metered with a parse note: bad_tcp_options 1, bad_ipv4_options 1" in text
    assert "reader: over_snaplen 1, truncated 1" in text


# ---------------------------------------------------------------------------------------------------------
# peak memory does not follow a length field

RSS_CHILD = r"""
import resource, sys
sys.path.insert(0, sys.argv[1])
from dpi.capture import CaptureError, CaptureReader
from dpi.engine import Engine, EngineConfig
eng = Engine(EngineConfig(observer_host="t", dpi_budget=0))
n, err = 0, ""
# streamed: pieces of 64 KiB, so the reader's whole buffer (FT_MAX_BLOCK + 4 pieces) is under 1 MiB and any
# growth with a length field would show
with CaptureReader(sys.argv[2], use_mmap=sys.argv[3] == "mmap", chunk_size=1 << 16) as rd:
    try:
        for pkts, data in rd:
            n += len(pkts)
            list(eng.add(pkts, data))
    except CaptureError as e:
        err = e.message
list(eng.flush())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, n, err, sep="\t")
"""


def _peak_rss_kib(path, mode):
    out = subprocess.run([PY, "-c", RSS_CHILD, str(ROOT), str(path), mode], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    rss, n, err = out.stdout.rstrip("\n").split("\t")
    return int(rss), int(n), err


RSS_SLACK_KIB = 8 << 10  # 8 MiB of noise allowed; the claims below are 256 MiB and 1 GiB


@pytest.mark.parametrize("mode", ["mmap", "stream"])
def test_length_claims_do_not_raise_peak_rss(tmp_path, mode):
    good = [eth_udp(i) for i in range(3)]
    base = tmp_path / "base.pcap"
    base.write_bytes(pcap_file([(i * NS, f, None, None) for i, f in enumerate(good)]))
    claim_pcap = tmp_path / "claim.pcap"
    claim_pcap.write_bytes(base.read_bytes() + struct.pack("<IIII", 9, 0, (256 << 20) + 1, (256 << 20) + 1))
    claim_ng = tmp_path / "claim.pcapng"
    claim_ng.write_bytes(SHB + IDB + epb(good[0]) + struct.pack("<II", 6, 1 << 30) + bytes(24))
    claim_skip = tmp_path / "claim_skip.pcapng"
    claim_skip.write_bytes(SHB + IDB + epb(good[0]) + struct.pack("<II", 0x40000BAD, 1 << 30) + bytes(24))
    # a skipped block that really is that long (a sparse file: no disk used), then one more packet: 1 GiB
    # mapped; streamed, 64 MiB (1024 pieces of 64 KiB read and skipped; 1 GiB would take 10 s of copying)
    real = tmp_path / "real_big.pcapng"
    size = 1 << 30 if mode == "mmap" else 64 << 20
    with open(real, "wb") as fh:
        fh.write(SHB + IDB + epb(good[0]) + struct.pack("<II", 0x40000BAD, size))
        fh.seek(size - 12, os.SEEK_CUR)
        fh.write(struct.pack("<I", size) + epb(good[1]))
    base_rss, n, err = _peak_rss_kib(base, mode)
    assert (n, err) == (3, "")
    cases = {
        claim_pcap: (3, f"pcap record at offset {base.stat().st_size}: captured length {(256 << 20) + 1} "
                        f"exceeds {256 << 10}"),
        claim_ng: (1, f"pcapng block at offset {len(SHB + IDB + epb(good[0]))}: block total length {1 << 30} "
                      f"exceeds {(256 << 10) + 65536} (enhanced packet block)"),
        claim_skip: (1, f"pcapng block at offset {len(SHB + IDB + epb(good[0]))}: file ends inside the block "
                        f"(32 of {1 << 30} bytes)"),
        real: (2, ""),
    }
    for path, (want_n, want_err) in cases.items():
        rss, n, err = _peak_rss_kib(path, mode)
        assert (n, err) == (want_n, want_err), path.name
        assert rss - base_rss < RSS_SLACK_KIB, (path.name, rss, base_rss)


# ---------------------------------------------------------------------------------------------------------
# random corruption of the nDPI captures, chunk by chunk in child processes

INTERESTING_U32 = (0, 1, 3, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, (256 << 10) + 1, (256 << 20) + 1, 1 << 30,
                   0x0A0D0D0A, 0xA1B2C3D4, 0x1A2B3C4D)


def corpus():
    """The nDPI captures the corruption runs on: sorted, up to MAX_INPUT_BYTES each."""
    return [p for p in sorted(NDPI_PCAP.iterdir())
            if p.suffix in (".pcap", ".pcapng", ".cap") and p.stat().st_size <= MAX_INPUT_BYTES]


def variant(files, index):
    """Variant `index`: (source name, corrupted bytes, how). Deterministic in (SEED, index)."""
    rng = random.Random(SEED * 1_000_003 + index)
    src = files[rng.randrange(len(files))]
    data = bytearray(src.read_bytes())
    how = []
    for _ in range(rng.randint(1, 8)):
        k = rng.random()
        if not data:
            break
        if k < 0.50:      # a random byte anywhere (mostly inside packets: reaches the parser)
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
            how.append(f"byte@{i}")
        elif k < 0.65:    # a bit flip in the first 512 bytes (file header, first records / blocks)
            i = rng.randrange(min(len(data), 512))
            data[i] ^= 1 << rng.randrange(8)
            how.append(f"bit@{i}")
        elif k < 0.85:    # a length-like 32-bit field, aligned, either byte order
            i = rng.randrange(0, max(1, len(data) - 3), 4) if len(data) >= 4 else 0
            v = rng.choice(INTERESTING_U32)
            data[i:i + 4] = struct.pack(rng.choice("<>") + "I", v)[:len(data) - i]
            how.append(f"u32@{i}={v:#x}")
        elif k < 0.925:   # a slice duplicated (headers repeated inside headers)
            i = rng.randrange(len(data))
            j = min(len(data), i + rng.randrange(1, 64))
            data[i:i] = data[i:j]
            how.append(f"dup@{i}:{j}")
        else:             # cut
            i = rng.randrange(len(data))
            del data[i:]
            how.append(f"cut@{i}")
    return src.name, bytes(data), ",".join(how)


def run_chunk(start, count, workdir, progress_path):
    """Child side: variants start..start+count through the reader (mapped; every 4th also streamed in
    pieces of 5 to 4096 bytes, which must agree) and one engine (DPI on), flushed every FLUSH_EVERY
    variants. Prints one JSON line of totals."""
    from dpi._reader import MAX_FRAME, REASON_NAMES
    from dpi.engine import Engine, EngineConfig

    files = corpus()
    eng = Engine(EngineConfig(observer_host="t"))
    flow_pkts = delivered = 0
    errors, reader = {}, {}
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else workdir))
    path = scratch / f"v{start}.cap"
    with open(progress_path, "w") as prog:
        for index in range(start, start + count):
            prog.seek(0)
            prog.write(f"{index:12d}")
            prog.flush()
            _name, data, _how = variant(files, index)
            path.write_bytes(data)
            frames, counters, err = _read_and_meter(path, eng, MAX_FRAME, len(REASON_NAMES))
            delivered += frames
            if (index + 1 - start) % FLUSH_EVERY == 0 or index + 1 == start + count:
                for b in eng.flush():
                    flow_pkts += int(b.column("src_packets").to_numpy().sum() +
                                     b.column("dst_packets").to_numpy().sum())
            if index % 4 == 0:
                piece = (5, 64, 1000, 4096)[index // 4 % 4]
                s_frames, s_counters, s_err = _read_only(path, use_mmap=False, chunk_size=piece)
                assert (s_frames, s_counters) == (frames, counters), index
                assert (None if s_err is None else (s_err.offset, s_err.message)) == \
                    (None if err is None else (err.offset, err.message)), index
            if err is not None:
                assert 0 <= err.offset <= len(data) and err.message, index
                kind = re.sub(r"0x[0-9a-f]+", "0x...", re.sub(r"\b\d+\b", "N", err.message.split(": ", 1)[-1]))
                errors[kind] = errors.get(kind, 0) + 1
            for k, v in counters.items():
                reader[k] = reader.get(k, 0) + v
    shutil.rmtree(scratch)
    c = eng.counters()
    assert sum(c["parse_reasons"].values()) == c["packets_seen"] == delivered
    assert c["packets_metered"] + c["packets_not_metered"] == c["packets_seen"]
    assert sum(c["not_metered_by_reason"].values()) == c["packets_not_metered"]
    assert flow_pkts == c["packets_metered"]
    print(json.dumps({"variants": count, "packets": delivered, "errors": errors, "reasons": c["parse_reasons"],
                      "reader": reader, "flows": c["flows_created"]}))


def _read_only(path, **kw):
    from dpi.capture import CaptureError, CaptureReader
    n, err = 0, None
    with CaptureReader(path, **kw) as rd:
        try:
            for pkts, _data in rd:
                n += len(pkts)
        except CaptureError as e:
            err = e
        counters = rd.counters
    return n, counters, err


def _read_and_meter(path, eng, max_frame, n_reasons):
    from dpi.capture import CaptureError, CaptureReader
    n, err = 0, None
    with CaptureReader(path) as rd:
        try:
            for pkts, data in rd:
                off, cap = pkts["frame_off"], pkts["cap_len"]
                assert (off + cap <= len(data)).all() and (cap <= max_frame).all()
                assert (pkts["reason"] < n_reasons).all()
                has = pkts["payload_cap"] > 0
                assert (pkts["payload_off"][has].astype(int) + pkts["payload_cap"][has] <= cap[has]).all()
                n += len(pkts)
                for _ in eng.add(pkts, data):
                    pass
        except CaptureError as e:
            err = e
        counters = rd.counters
    return n, counters, err


@pytest.mark.skipif(not NDPI_PCAP.is_dir(), reason=f"nDPI captures not found at {NDPI_PCAP} "
                    "(set FLOWTAP_SHARED_DATA)")
def test_corrupted_ndpi_captures(tmp_path):
    files = corpus()
    assert len(files) > 100
    totals = {"variants": 0, "packets": 0, "errors": {}, "reasons": {}, "flows": 0}
    for start in range(0, VARIANTS, CHUNK):
        count = min(CHUNK, VARIANTS - start)
        progress = tmp_path / f"progress{start}"
        try:
            out = subprocess.run([PY, __file__, "chunk", str(start), str(count), str(tmp_path), str(progress)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=CHUNK_TIMEOUT_S)
            failed = out.returncode != 0 and f"exit status {out.returncode}: {out.stderr[-3000:]}"
        except subprocess.TimeoutExpired:
            failed = f"no result within {CHUNK_TIMEOUT_S} s (hang)"
        if failed:
            index = int(progress.read_text() or start) if progress.exists() else start
            name, data, how = variant(files, index)
            keep = tmp_path / f"variant{index}.cap"
            keep.write_bytes(data)
            pytest.fail(f"variant {index} ({name}: {how}), saved as {keep}: {failed}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        totals["variants"] += r["variants"]
        totals["packets"] += r["packets"]
        totals["flows"] += r["flows"]
        for key in ("errors", "reasons"):
            for k, v in r[key].items():
                totals[key][k] = totals[key].get(k, 0) + v
    assert totals["variants"] == VARIANTS
    # the corruption reaches the parser, not only the file structure: packets arrive with many reasons
    assert totals["packets"] > 10 * VARIANTS and len(totals["reasons"]) >= 8
    print(f"\n{VARIANTS} corrupted variants: {totals['packets']} packets, {totals['flows']} flows, "
          f"{sum(totals['errors'].values())} ended by a capture error")
    print("  reasons: " + json.dumps(dict(sorted(totals["reasons"].items(), key=lambda kv: -kv[1]))))
    print("  errors:  " + json.dumps(dict(sorted(totals["errors"].items(), key=lambda kv: -kv[1]))))


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "chunk":
    sys.path.insert(0, str(ROOT))
    run_chunk(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
