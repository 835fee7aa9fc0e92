"""Capture reader (ext/ft_reader.c, dpi._reader.CaptureReader, dpi.capture): pcap / pcapng, plain and
compressed, against captures written by scapy and by hand with struct (expected values from the writer's
inputs and plain arithmetic), against tshark on real captures, and on malformed input."""
import gzip
import os
import random
import shutil
import struct
import subprocess
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import zstandard
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import EDecimal, PcapNgWriter, PcapWriter

from dpi._reader import MAX_BLOCK, MAX_FRAME, MAX_IFACES, PKT_DTYPE
from dpi.capture import CaptureError, CaptureReader, iter_captures

SHARED = Path(os.environ.get("FLOWTAP_SHARED_DATA",
                             Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
NDPI = SHARED / "ndpi"
NDPI_PCAP = NDPI / "pcap"

NS = 10**9


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------

def read_all(path, **kw):
    """All records of a capture as tuples (ts_ns, wire_len, cap_len, iface, direction, linktype, frame
    bytes), the reader's counters, and the CaptureError that ended it (or None)."""
    out, err = [], None
    with CaptureReader(path, **kw) as rd:
        try:
            for pkts, data in rd:
                assert pkts.dtype == PKT_DTYPE and data.dtype == np.uint8
                assert 0 < len(pkts) <= rd.batch_size
                for p in pkts:
                    off, cap = int(p["frame_off"]), int(p["cap_len"])
                    assert off + cap <= len(data)
                    out.append((int(p["ts_ns"]), int(p["wire_len"]), cap, int(p["iface"]),
                                int(p["direction"]), int(p["linktype"]), bytes(data[off:off + cap])))
        except CaptureError as e:
            err = e
        counters = rd.counters
    return out, counters, err


def frames(n, seed=1):
    """n distinct Ethernet/IPv4 frames of varied lengths (not multiples of 4, to exercise padding)."""
    rnd = random.Random(seed)
    res = []
    for i in range(n):
        payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300)))
        l4 = TCP(sport=1000 + i, dport=80) if i % 2 else UDP(sport=2000 + i, dport=53)
        res.append(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                         IP(src="10.0.0.1", dst=f"10.0.1.{i % 250}") / l4 / payload))
    return res


# classic pcap by hand -------------------------------------------------------------------------------------

def pcap_bytes(records, endian="<", nano=False, snaplen=65535, linktype=1):
    """records: (sec, frac, frame, wire_len or None)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for sec, frac, frame, wire in records:
        out += struct.pack(endian + "IIII", sec, frac, len(frame), len(frame) if wire is None else wire)
        out += frame
    return out


# pcapng by hand -------------------------------------------------------------------------------------------

def pad4(b):
    return b + b"\0" * (-len(b) % 4)


def opt(e, code, value):
    return struct.pack(e + "HH", code, len(value)) + pad4(value)


def block(e, btype, body, opts=b""):
    body = pad4(body)
    if opts:
        body += opts + struct.pack(e + "HH", 0, 0)
    tl = 12 + len(body)
    return struct.pack(e + "II", btype, tl) + body + struct.pack(e + "I", tl)


def shb(e):
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1),
                 opt(e, 4, b"flowtap test"))  # shb_userappl


def idb(e, linktype, snaplen=0, tsresol=None, tsoffset=None, name=None):
    opts = b""
    if name is not None:
        opts += opt(e, 2, name)
    if tsresol is not None:
        opts += opt(e, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += opt(e, 14, struct.pack(e + "q", tsoffset))
    return block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen), opts)


def epb(e, ifid, ts, frame, wire=None, flags=None, comment=None):
    opts = b""
    if comment is not None:
        opts += opt(e, 1, comment)
    if flags is not None:
        opts += opt(e, 2, struct.pack(e + "I", flags))
    body = struct.pack(e + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(frame),
                       len(frame) if wire is None else wire) + frame
    return block(e, 6, body, opts)


def pb(e, ifid, ts, frame, flags=None):
    opts = opt(e, 2, struct.pack(e + "I", flags)) if flags is not None else b""
    body = struct.pack(e + "HHIIII", ifid, 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame
    return block(e, 2, body, opts)


def spb(e, frame, wire=None):
    return block(e, 3, struct.pack(e + "I", len(frame) if wire is None else wire) + frame)


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def compressed_variants(tmp_path, path):
    """The same capture as .gz with two concatenated members and as .zst with two frames."""
    raw = Path(path).read_bytes()
    half = len(raw) // 2
    gz = tmp_path / (Path(path).name + ".gz")
    gz.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    zs = tmp_path / (Path(path).name + ".zst")
    c = zstandard.ZstdCompressor()
    zs.write_bytes(c.compress(raw[:half]) + c.compress(raw[half:]))
    return gz, zs


def all_ways(tmp_path, path):
    """(label, path, kwargs) for mapped, streamed-plain in odd chunk sizes, gzip and zstd."""
    gz, zs = compressed_variants(tmp_path, path)
    ways = [("mmap", path, {}), ("mmap-batch3", path, {"batch_size": 3})]
    for chunk in (1, 3, 7, 64, 4096):
        ways.append((f"stream-{chunk}", path, {"use_mmap": False, "chunk_size": chunk}))
    ways += [("gzip", gz, {}), ("gzip-13", gz, {"chunk_size": 13, "batch_size": 2}),
             ("zstd", zs, {}), ("zstd-5", zs, {"chunk_size": 5, "batch_size": 4})]
    return ways


def assert_same_every_way(tmp_path, path):
    """Reads the capture every way; all must agree (records, counters, error offset and message).
    Returns the mapped result."""
    base = read_all(path)
    for label, p, kw in all_ways(tmp_path, path):
        recs, counters, err = read_all(p, **kw)
        assert recs == base[0], label
        assert counters == base[1], label
        if base[2] is None:
            assert err is None, (label, str(err))
        else:
            assert err is not None, label
            assert (err.offset, err.message) == (base[2].offset, base[2].message), label
    return base


# ----------------------------------------------------------------------------------------------------------
# classic pcap
# ----------------------------------------------------------------------------------------------------------

def test_scapy_pcap_microseconds(tmp_path):
    fr = frames(20)
    path = tmp_path / "us.pcap"
    times = [Decimal(1700000000) + Decimal(i) / 8 for i in range(20)]  # exact in us
    with PcapWriter(str(path)) as w:
        for f, t in zip(fr, times):
            pkt = Ether(f)
            pkt.time = EDecimal(t)
            w.write(pkt)
    recs, counters, err = assert_same_every_way(tmp_path, path)
    assert err is None
    assert [r[0] for r in recs] == [int(t * NS) for t in times]
    assert [r[6] for r in recs] == fr
    assert all(r[1] == r[2] == len(f) for r, f in zip(recs, fr))
    assert all(r[3] == 0 and r[4] == 0 and r[5] == 1 for r in recs)
    assert counters["packets"] == 20
    assert counters["bytes"] == sum(map(len, fr))


def test_scapy_pcap_nanoseconds(tmp_path):
    fr = frames(5)
    path = tmp_path / "ns.pcap"
    times = [Decimal("1700000000.123456789") + Decimal(i) * Decimal("0.000000001") for i in range(5)]
    with PcapWriter(str(path), nano=True) as w:
        for f, t in zip(fr, times):
            pkt = Ether(f)
            pkt.time = EDecimal(t)
            w.write(pkt)
    recs, _, err = read_all(path)
    assert err is None
    assert [r[0] for r in recs] == [1700000000123456789 + i for i in range(5)]
    assert [r[6] for r in recs] == fr


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_hand_pcap_byte_orders_and_resolutions(tmp_path, endian, nano):
    fr = frames(6, seed=7)
    recs_in = [(1600000000 + i, (999999999 if nano else 999999) - i, f, None) for i, f in enumerate(fr)]
    path = write(tmp_path, "h.pcap", pcap_bytes(recs_in, endian=endian, nano=nano, linktype=101))
    recs, counters, err = read_all(path)
    assert err is None
    mult = 1 if nano else 1000
    assert [r[0] for r in recs] == [(1600000000 + i) * NS + ((999999999 if nano else 999999) - i) * mult
                                    for i in range(6)]
    assert [r[6] for r in recs] == fr
    assert all(r[5] == 101 for r in recs)


def test_pcap_lengths_snaplen_and_fcs_bits(tmp_path):
    f = frames(3, seed=3)
    big = bytes(range(256)) * 1000  # 256000 bytes: above the snaplen, within FT_MAX_FRAME
    recs_in = [
        (1, 0, f[0][:40], len(f[0])),   # cut by the snap length: wire 1 > captured
        (2, 0, f[1], 10),               # captured > wire: counted, wire taken as captured
        (3, 0, big, len(big)),          # captured > snaplen 65535: accepted and counted
        (4, 0, b"", 0),                 # empty frame
    ]
    # link type field: FCS present (bit 26) with 2 16-bit words (4 bytes) in the top 4 bits
    path = write(tmp_path, "l.pcap", pcap_bytes(recs_in, linktype=(2 << 28) | 0x04000000 | 1))
    recs, counters, err = assert_same_every_way(tmp_path, path)
    assert err is None
    assert [(r[1], r[2]) for r in recs] == [(len(f[0]), 40), (len(f[1]), len(f[1])), (256000, 256000),
                                            (0, 0)]
    assert [r[6] for r in recs] == [f[0][:40], f[1], big, b""]
    assert all(r[5] == 1 for r in recs)
    assert counters["truncated"] == 1
    assert counters["caplen_over_wire"] == 1
    assert counters["over_snaplen"] == 1
    assert counters["bytes"] == len(f[0]) + len(f[1]) + 256000
    with CaptureReader(path) as rd:
        next(rd)
        assert rd.pcap_linktype == 1 and rd.pcap_fcs_len == 4 and rd.format == "pcap"


def test_pcap_trunc_flag_set_by_reader(tmp_path):
    f = frames(1)[0]
    path = write(tmp_path, "t.pcap", pcap_bytes([(1, 0, f[:30], len(f)), (1, 1, f, None)]))
    with CaptureReader(path) as rd:
        pkts, _ = next(rd)
        assert list(pkts["flags"] & 0x10) == [0x10, 0]


# ----------------------------------------------------------------------------------------------------------
# pcapng
# ----------------------------------------------------------------------------------------------------------

def test_scapy_pcapng_interfaces_and_direction(tmp_path):
    fr = frames(9, seed=11)
    path = tmp_path / "s.pcapng"
    with PcapNgWriter(str(path)) as w:
        for i, f in enumerate(fr):
            pkt = Ether(f)
            pkt.time = 1700000000 + i * 0.5
            pkt.sniffed_on = ["eth0", "eth1", "eth2"][i % 3]
            pkt.direction = i % 3  # 0 unknown, 1 inbound, 2 outbound
            w.write(pkt)
    recs, counters, err = assert_same_every_way(tmp_path, path)
    assert err is None
    assert [r[6] for r in recs] == fr
    assert [r[0] for r in recs] == [(1700000000 * 2 + i) * NS // 2 for i in range(9)]
    # scapy writes an IDB without a name first (id 0), then one per new if_name: eth0=1, eth1=2, eth2=3
    assert [r[3] for r in recs] == [1 + i % 3 for i in range(9)]
    assert [r[4] for r in recs] == [i % 3 for i in range(9)]
    assert counters["interfaces"] == 4 and counters["sections"] == 1


def build_multi_section():
    """Two sections (little- then big-endian), several IDBs with different link types and resolutions,
    EPBs with flags and comments, an SPB, an obsolete PB, and blocks the reader skips.
    Returns the bytes and the expected records."""
    fr = frames(12, seed=5)
    exp = []
    b = shb("<")
    b += idb("<", 1, 0, tsresol=9)                          # 0: Ethernet, ns
    b += idb("<", 101, 0)                                   # 1: raw IP, default us
    b += idb("<", 113, 128, tsresol=0x80 | 20, tsoffset=-3600)  # 2: SLL, 2^-20 s, offset -1 h, snaplen 128
    b += block("<", 4, struct.pack("<HH", 0, 0))            # NRB (empty)
    ts = 1700000000123456789
    b += epb("<", 0, ts, fr[0], flags=1)
    exp.append((ts, len(fr[0]), len(fr[0]), 0, 1, 1, fr[0]))
    b += epb("<", 1, 1700000000654321, fr[1], flags=2, comment=b"hello")
    exp.append((1700000000654321000, len(fr[1]), len(fr[1]), 1, 2, 101, fr[1]))
    u = 1700000000 * 2**20 + 12345
    b += epb("<", 2, u, fr[2][:100], wire=len(fr[2]), flags=3)  # direction bits 3: not a valid value
    exp.append((((u * NS) >> 20) - 3600 * NS, len(fr[2]), 100, 2, 0, 113, fr[2][:100]))
    b += block("<", 5, struct.pack("<IIII", 0, 0, 0, 0))  # ISB
    b += block("<", 0x00000BAD, struct.pack("<I", 32473) + b"custom data!")  # custom block
    b += spb("<", fr[3])   # SPB: interface 0, time of the previous packet
    exp.append((exp[-1][0], len(fr[3]), len(fr[3]), 0, 0, 1, fr[3]))
    b += pb("<", 1, 1700000001000000, fr[4], flags=1)  # obsolete PB with pack_flags
    exp.append((1700000001000000000, len(fr[4]), len(fr[4]), 1, 1, 101, fr[4]))

    # second section, big-endian: interface ids restart at 0
    b += shb(">")
    b += idb(">", 101, 0, tsresol=3)                        # 0: ms
    b += idb(">", 1, 0, tsresol=0x80 | 0)                   # 1: 2^0 = seconds
    b += epb(">", 1, 1700000002, fr[5])
    exp.append((1700000002 * NS, len(fr[5]), len(fr[5]), 1, 0, 1, fr[5]))
    b += epb(">", 0, 1700000003007, fr[6], flags=2)
    exp.append((1700000003007000000, len(fr[6]), len(fr[6]), 0, 2, 101, fr[6]))
    # cut frame: captured = the room in the block, padding included (the SPB cannot tell them apart)
    b += spb(">", fr[7], wire=len(fr[7]) + 1000)
    assert len(fr[7]) % 4 != 0
    exp.append((exp[-1][0], len(fr[7]) + 1000, len(pad4(fr[7])), 0, 0, 101, pad4(fr[7])))
    b += block(">", 0x40000BAD, struct.pack(">I", 32473))  # custom block, do-not-copy variant
    return b, exp


def test_hand_pcapng_sections_interfaces_blocks(tmp_path):
    data, exp = build_multi_section()
    path = write(tmp_path, "m.pcapng", data)
    recs, counters, err = assert_same_every_way(tmp_path, path)
    assert err is None
    assert recs == exp
    assert counters["sections"] == 2
    assert counters["interfaces"] == 5
    assert counters["skipped_blocks"] == 4
    assert counters["simple_packets"] == 2
    assert counters["obsolete_packets"] == 1
    assert counters["packets"] == len(exp)
    assert counters["bytes"] == sum(e[1] for e in exp)
    assert counters["truncated"] == 2


@pytest.mark.parametrize("tsresol,units,expected", [
    (9, 1700000000999999999, 1700000000999999999),
    (6, 1700000000999999, 1700000000999999000),
    (0x80 | 20, 1700000000 * 2**20 + 2**19, 1700000000 * NS + NS // 2),
    (0x80 | 20, 1, NS >> 20),                             # 953 ns: truncated, not rounded
    (0x80 | 32, 2**32 + 1, NS + 0),                       # 2^-32 s = 0.23 ns
    (12, 123456789012345, 123456789012),                  # ps -> ns by division
    (0, 1700000000, 1700000000 * NS),                     # seconds
])
def test_pcapng_tsresol(tmp_path, tsresol, units, expected):
    f = frames(1)[0]
    data = shb("<") + idb("<", 1, tsresol=tsresol) + epb("<", 0, units, f)
    recs, _, err = read_all(write(tmp_path, "r.pcapng", data))
    assert err is None
    if tsresol & 0x80:
        assert recs[0][0] == (units * NS) >> (tsresol & 0x7F) == expected
    else:
        assert recs[0][0] == units * NS // 10**tsresol == expected


def test_pcapng_tsoffset_and_saturation(tmp_path):
    f = frames(1)[0]
    data = (shb("<") + idb("<", 1, tsresol=9, tsoffset=100) + idb("<", 1, tsresol=9, tsoffset=-100)
            + idb("<", 1, tsresol=0, tsoffset=0)
            + epb("<", 0, 5, f) + epb("<", 1, 5, f) + epb("<", 2, 2**63, f))
    recs, counters, err = read_all(write(tmp_path, "o.pcapng", data))
    assert err is None
    assert [r[0] for r in recs] == [100 * NS + 5, 0, 2**64 - 1]
    assert counters["ts_clamped"] == 2


def test_pcapng_huge_skipped_block_streams(tmp_path):
    """A skipped block larger than the stream buffer is skipped piece by piece; results identical."""
    fr = frames(3)
    big = block("<", 0x00000BAD, struct.pack("<I", 32473) + os.urandom(MAX_BLOCK + 100000))
    data = shb("<") + idb("<", 1) + epb("<", 0, 1, fr[0]) + big + epb("<", 0, 2, fr[1]) + big \
        + epb("<", 0, 3, fr[2])
    path = write(tmp_path, "big.pcapng", data)
    recs, counters, err = read_all(path)
    assert err is None and [r[6] for r in recs] == fr and counters["skipped_blocks"] == 2
    for kw in ({"use_mmap": False, "chunk_size": 65536}, {"use_mmap": False, "chunk_size": 1 << 20}):
        assert read_all(path, **kw) == (recs, counters, None)
    gz, zs = compressed_variants(tmp_path, path)
    assert read_all(gz, chunk_size=100000)[:2] == (recs, counters)
    assert read_all(zs, chunk_size=100000)[:2] == (recs, counters)
    # same block with a wrong trailing copy: found after skipping
    bad = bytearray(data)
    first = data.index(big)
    struct.pack_into("<I", bad, first + len(big) - 4, 12)
    p2 = write(tmp_path, "bigbad.pcapng", bytes(bad))
    for kw in ({}, {"use_mmap": False, "chunk_size": 65536}):
        recs2, _, err2 = read_all(p2, **kw)
        assert len(recs2) == 1 and err2.offset == first
        assert err2.message == (f"pcapng block at offset {first}: block total length {len(big)} disagrees "
                                f"with the trailing copy 12")


def test_too_many_interfaces(tmp_path):
    data = shb("<") + b"".join(idb("<", 1) for _ in range(MAX_IFACES)) + epb("<", MAX_IFACES - 1, 7, b"x")
    recs, counters, err = read_all(write(tmp_path, "i.pcapng", data))
    assert err is None and recs[0][3] == MAX_IFACES - 1 and counters["interfaces"] == MAX_IFACES
    off = len(data)
    data += idb("<", 1)
    recs, counters, err = read_all(write(tmp_path, "i2.pcapng", data))
    assert len(recs) == 1
    assert err.offset == off
    assert err.message == f"pcapng block at offset {off}: more than {MAX_IFACES} interfaces in one section"


# ----------------------------------------------------------------------------------------------------------
# compression and batching
# ----------------------------------------------------------------------------------------------------------

def test_compressed_progress_and_batches(tmp_path):
    fr = frames(300, seed=2)
    path = write(tmp_path, "p.pcap", pcap_bytes([(i, 0, f, None) for i, f in enumerate(fr)]))
    gz, zs = compressed_variants(tmp_path, path)
    for p in (path, gz, zs):
        with CaptureReader(p, batch_size=64) as rd:
            assert rd.compression == {".pcap": "none", ".gz": "gzip", ".zst": "zstd"}[p.suffix]
            assert rd.total_bytes == p.stat().st_size
            sizes = [len(pk) for pk, _ in rd]
            assert sizes == [64, 64, 64, 64, 44]
            assert rd.packets == 300
            assert rd.bytes_consumed == rd.total_bytes


def test_batch_views_valid_until_next(tmp_path):
    """Each batch's frames are readable before the next step, also when the stream buffer moves."""
    fr = frames(200, seed=9)
    path = write(tmp_path, "v.pcap", pcap_bytes([(i, 0, f, None) for i, f in enumerate(fr)]))
    gz, _ = compressed_variants(tmp_path, path)
    got = []
    for pkts, data in CaptureReader(gz, batch_size=7, chunk_size=999):
        assert not data.flags.writeable
        got += [bytes(data[o:o + c]) for o, c in zip(pkts["frame_off"], pkts["cap_len"])]
    assert got == fr


def test_iter_captures_chain(tmp_path):
    fr = frames(10)
    a = write(tmp_path, "a.pcap", pcap_bytes([(1, i, f, None) for i, f in enumerate(fr[:4])]))
    b = write(tmp_path, "b.pcapng", shb("<") + idb("<", 1) + b"".join(epb("<", 0, i, f)
                                                                      for i, f in enumerate(fr[4:])))
    bad = write(tmp_path, "bad.txt", b"<html>nope</html>")
    seen = []
    for batch in iter_captures([a, b], batch_size=3):
        seen += [(batch.file_index, bytes(batch.data[o:o + c]))
                 for o, c in zip(batch.pkts["frame_off"], batch.pkts["cap_len"])]
    assert seen == [(0, f) for f in fr[:4]] + [(1, f) for f in fr[4:]]
    with pytest.raises(CaptureError):
        list(iter_captures([a, bad, b]))
    errors = []
    idx = [bt.file_index for bt in iter_captures([a, bad, b], on_error=lambda i, e: errors.append((i, e)))]
    assert sorted(set(idx)) == [0, 2] and errors[0][0] == 1 and errors[0][1].offset == 0


# ----------------------------------------------------------------------------------------------------------
# malformed input: a CaptureError with the right offset, after every good record
# ----------------------------------------------------------------------------------------------------------

def expect_error(tmp_path, data, n_good, offset, message, name="bad.cap", every_way=True):
    path = write(tmp_path, name, data)
    if every_way:
        recs, _, err = assert_same_every_way(tmp_path, path)
    else:
        recs, _, err = read_all(path)
    assert len(recs) == n_good
    assert err is not None
    assert (err.offset, err.message) == (offset, message)
    # one line naming file and offset once, even when the message names the offset too
    assert str(err) == f"{path}: offset {offset}: " + message.replace(f" at offset {offset}:", ":", 1)
    assert str(err).count(f"offset {offset}") == 1
    assert err.path == str(path)
    return recs


def test_not_a_capture(tmp_path):
    expect_error(tmp_path, b"<html><body>not a capture</body></html>\n", 0, 0,
                 "not a pcap or pcapng file (magic 0x3c68746d)")


def test_empty_and_tiny(tmp_path):
    expect_error(tmp_path, b"", 0, 0, "empty file", every_way=False)
    path = write(tmp_path, "e.pcap", b"")
    for kw in ({}, {"use_mmap": False}):
        assert read_all(path, **kw)[2].message == "empty file"
    gz = tmp_path / "e.pcap.gz"
    gz.write_bytes(gzip.compress(b""))
    assert read_all(gz)[2].message == "empty file"
    expect_error(tmp_path, b"\xd4\xc3", 0, 0, "file too short for a capture header (2 bytes)")


def test_truncated_headers(tmp_path):
    hdr = pcap_bytes([])
    expect_error(tmp_path, hdr[:10], 0, 0, "truncated pcap file header (10 of 24 bytes)")
    s = shb("<")
    expect_error(tmp_path, s[:20], 0, 0,
                 f"pcapng block at offset 0: file ends inside the block (20 of {len(s)} bytes)")
    expect_error(tmp_path, s[:8], 0, 0,
                 "pcapng block at offset 0: file ends inside the block header (8 of 12 bytes)")


def test_truncated_last_pcap_record(tmp_path):
    fr = frames(4, seed=4)
    data = pcap_bytes([(1, i, f, None) for i, f in enumerate(fr)])
    last = len(data) - 16 - len(fr[3])
    recs = expect_error(tmp_path, data[:-5], 3, last,
                        f"pcap record at offset {last}: file ends inside the packet data "
                        f"({len(fr[3]) - 5} of {len(fr[3])} captured bytes)")
    assert [r[6] for r in recs] == fr[:3]
    expect_error(tmp_path, data[:last + 9], 3, last,
                 f"pcap record at offset {last}: file ends inside the record header (9 of 16 bytes)")


def test_truncated_last_pcapng_block(tmp_path):
    fr = frames(3)
    data = shb("<") + idb("<", 1) + b"".join(epb("<", 0, i, f) for i, f in enumerate(fr))
    last_len = len(epb("<", 0, 2, fr[2]))
    last = len(data) - last_len
    expect_error(tmp_path, data[:-1], 2, last,
                 f"pcapng block at offset {last}: file ends inside the block ({last_len - 1} of "
                 f"{last_len} bytes)")


def test_truncated_compressed_stream(tmp_path):
    """A cut .gz: records before the cut, then an error naming the record and the stream fault."""
    fr = frames(50, seed=8)
    raw = pcap_bytes([(1, i, f, None) for i, f in enumerate(fr)])
    gz = tmp_path / "cut.pcap.gz"
    gz.write_bytes(gzip.compress(raw)[:-100])
    recs, _, err = read_all(gz)
    assert 0 < len(recs) < 50 and [r[6] for r in recs] == fr[:len(recs)]
    assert "gzip stream truncated" in err.message
    zs = tmp_path / "cut.pcap.zst"
    zs.write_bytes(zstandard.ZstdCompressor().compress(raw)[:len(raw) // 4])
    recs, _, err = read_all(zs)
    assert err is not None and [r[6] for r in recs] == fr[:len(recs)]
    assert "zstd stream truncated" in err.message


def _zstd_raw_frame(window_log: int, content: bytes) -> bytes:
    """A zstd frame by hand (RFC 8878 3.1.1): magic, a header without content size or dictionary that declares
    a window of 2**window_log bytes (exponent window_log - 10, mantissa 0), and one last raw block."""
    assert len(content) < 128 * 1024
    block = ((len(content) << 3) | 1).to_bytes(3, "little")   # size, type 0 (raw), last block
    return bytes.fromhex("28b52ffd") + bytes([0x00, (window_log - 10) << 3]) + block + content


def test_zstd_window_above_the_limit_says_how_to_read_it(tmp_path):
    """A frame may declare any window; memory for it is not allocated on a header's word: 128 MiB is read,
    256 MiB is refused (as the zstd tool does without --long), with a message that says what to do."""
    fr = frames(10, seed=11)
    raw = pcap_bytes([(1, i, f, None) for i, f in enumerate(fr)])
    ok = write(tmp_path, "w27.pcap.zst", _zstd_raw_frame(27, raw))
    recs, _, err = read_all(ok)
    assert err is None and [r[6] for r in recs] == fr
    big = write(tmp_path, "w28.pcap.zst", _zstd_raw_frame(28, raw))
    recs, _, err = read_all(big)
    assert recs == [] and err.offset == 0
    assert err.message.startswith("zstd decompression failed:") and "zstd -d --long=31" in err.message


def test_compressed_twice_says_so(tmp_path):
    """A .gz inside a .zst (or the other way round): the data after one layer is not a capture, and the error
    says it is compressed again instead of leaving the user with a magic number."""
    raw = pcap_bytes([(1, i, f, None) for i, f in enumerate(frames(3, seed=12))])
    for name, blob, inner in (("x.pcap.gz.zst", zstandard.ZstdCompressor().compress(gzip.compress(raw)), "gzip"),
                              ("x.pcap.zst.gz", gzip.compress(zstandard.ZstdCompressor().compress(raw)), "zstd")):
        recs, _, err = read_all(write(tmp_path, name, blob))
        outer = "zstd" if name.endswith(".zst") else "gzip"
        assert recs == [] and err.offset == 0
        assert err.message.startswith("not a pcap or pcapng file (magic 0x")
        assert f"the {outer}-decompressed data is compressed again ({inner})" in err.message
    # a plain file with the same bytes is not called "compressed again": it is not decompressed at all
    recs, _, err = read_all(write(tmp_path, "junk.pcap", b"\x00" * 64))
    assert "compressed again" not in err.message


def test_compressed_cut_at_record_boundary(tmp_path):
    """The decompressed bytes end cleanly after a record, but the compressed stream was cut inside the
    next member / frame: still an error, at the end of the decompressed bytes."""
    fr = frames(20, seed=6)
    raw = pcap_bytes([(1, i, f, None) for i, f in enumerate(fr)])
    k = len(pcap_bytes([(1, i, f, None) for i, f in enumerate(fr[:12])]))
    c = zstandard.ZstdCompressor(write_checksum=True)
    second = c.compress(raw[k:])
    assert len(raw) - k < 128 * 1024  # one block: nothing of it comes out before it is complete
    # cut inside the magic, the frame header, the block; inside the checksum all data is out already
    for cut, n_good, offset in ((3, 12, k), (6, 12, k), (len(second) // 2, 12, k),
                                (len(second) - 2, 20, len(raw))):
        zs = write(tmp_path, f"z{cut}.pcap.zst", c.compress(raw[:k]) + second[:cut])
        recs, _, err = read_all(zs)
        assert [r[6] for r in recs] == fr[:n_good]
        assert (err.offset, err.message) == (offset, "zstd stream truncated (the input ends inside a frame)")
    skippable = struct.pack("<II", 0x184D2A5E, 5) + b"12345"
    zs = write(tmp_path, "zskip.pcap.zst", c.compress(raw[:k]) + skippable + second)
    assert [r[6] for r in read_all(zs)[0]] == fr
    assert read_all(zs)[2] is None
    gz = write(tmp_path, "g.pcap.gz", gzip.compress(raw[:k]) + gzip.compress(raw[k:])[:15])
    recs, _, err = read_all(gz)
    assert [r[6] for r in recs] == fr[:12]
    assert (err.offset, err.message) == (k, "gzip stream truncated (the last member has no end)")


def test_absurd_captured_length(tmp_path):
    fr = frames(2)
    data = bytearray(pcap_bytes([(1, 0, fr[0], None), (2, 0, fr[1], None)]))
    off = 24 + 16 + len(fr[0])
    struct.pack_into("<I", data, off + 8, 0xFFFFFFFF)
    expect_error(tmp_path, bytes(data), 1, off,
                 f"pcap record at offset {off}: captured length 4294967295 exceeds {MAX_FRAME}")
    struct.pack_into("<I", data, off + 8, MAX_FRAME + 1)
    expect_error(tmp_path, bytes(data), 1, off,
                 f"pcap record at offset {off}: captured length {MAX_FRAME + 1} exceeds {MAX_FRAME}")
    # pcapng: EPB captured length beyond the limit, and beyond its block
    head = shb("<") + idb("<", 1) + epb("<", 0, 1, fr[0])
    e = bytearray(epb("<", 0, 2, fr[1]))
    struct.pack_into("<I", e, 20, 0xFFFFFFF0)
    expect_error(tmp_path, head + bytes(e), 1, len(head),
                 f"pcapng block at offset {len(head)}: captured length 4294967280 exceeds {MAX_FRAME}")
    struct.pack_into("<I", e, 20, len(fr[1]) + 100)
    expect_error(tmp_path, head + bytes(e), 1, len(head),
                 f"pcapng block at offset {len(head)}: captured length {len(fr[1]) + 100} does not fit "
                 f"in block total length {len(e)}")


def test_pcapng_block_length_faults(tmp_path):
    fr = frames(2)
    head = shb("<") + idb("<", 1) + epb("<", 0, 1, fr[0])
    e = bytearray(epb("<", 0, 2, fr[1]))
    tl = len(e)
    # trailing copy disagrees
    struct.pack_into("<I", e, tl - 4, tl + 4)
    expect_error(tmp_path, head + bytes(e), 1, len(head),
                 f"pcapng block at offset {len(head)}: block total length {tl} disagrees with the "
                 f"trailing copy {tl + 4}")
    # not a multiple of 4
    e = bytearray(epb("<", 0, 2, fr[1]))
    struct.pack_into("<I", e, 4, tl - 2)
    expect_error(tmp_path, head + bytes(e), 1, len(head),
                 f"pcapng block at offset {len(head)}: block total length {tl - 2} is not a multiple of 4")
    # shorter than the fixed part
    struct.pack_into("<I", e, 4, 12)
    expect_error(tmp_path, head + bytes(e), 1, len(head),
                 f"pcapng block at offset {len(head)}: block total length 12 is less than 32 "
                 f"(enhanced packet block, type 0x6)")
    # a skipped block shorter than a block header
    nrb = bytearray(block("<", 4, b"\0" * 4))
    struct.pack_into("<I", nrb, 4, 8)
    expect_error(tmp_path, head + bytes(nrb), 1, len(head),
                 f"pcapng block at offset {len(head)}: block total length 8 is less than 12 "
                 f"(unknown block, type 0x4)")
    # a packet block beyond the size the reader holds
    e = bytearray(epb("<", 0, 2, fr[1]))
    struct.pack_into("<I", e, 4, MAX_BLOCK + 4)
    expect_error(tmp_path, head + bytes(e), 1, len(head),
                 f"pcapng block at offset {len(head)}: block total length {MAX_BLOCK + 4} exceeds "
                 f"{MAX_BLOCK} (enhanced packet block)")


def test_pcapng_interface_faults(tmp_path):
    fr = frames(2)
    head = shb("<") + idb("<", 1) + idb("<", 1) + epb("<", 0, 1, fr[0])
    expect_error(tmp_path, head + epb("<", 2, 1, fr[1]), 1, len(head),
                 f"pcapng block at offset {len(head)}: interface id 2 out of range (2 interfaces in this "
                 f"section)")
    # ids are per section: after a new SHB, id 0 needs a new IDB
    head2 = head + shb(">")
    expect_error(tmp_path, head2 + epb(">", 0, 1, fr[1]), 1, len(head2),
                 f"pcapng block at offset {len(head2)}: interface id 0 out of range (0 interfaces in this "
                 f"section)")
    expect_error(tmp_path, head2 + spb(">", fr[1]), 1, len(head2),
                 f"pcapng block at offset {len(head2)}: simple packet block before any interface "
                 f"description block")


def test_pcapng_bad_shb(tmp_path):
    s = bytearray(shb("<"))
    s[8:12] = b"ABCD"
    expect_error(tmp_path, bytes(s), 0, 0,
                 "pcapng block at offset 0: section header with bad byte-order magic 0x41424344")
    s = bytearray(shb("<"))
    struct.pack_into("<H", s, 12, 2)
    expect_error(tmp_path, bytes(s), 0, 0, "pcapng block at offset 0: unsupported pcapng version 2.0")


def test_bad_options_are_counted_not_fatal(tmp_path):
    f = frames(1)[0]
    e = bytearray(epb("<", 0, 1, f, flags=1))
    opt_at = 28 + len(pad4(f))
    struct.pack_into("<H", e, opt_at + 2, 500)  # option length runs past the block
    recs, counters, err = read_all(write(tmp_path, "o.pcapng", shb("<") + idb("<", 1) + bytes(e)))
    assert err is None and recs[0][6] == f and recs[0][4] == 0 and counters["bad_options"] == 1


def test_mutations_never_crash(tmp_path):
    """Random byte flips and cuts of valid captures: every result is records or a CaptureError, and the
    mapped and streamed readings agree."""
    data_ng, _ = build_multi_section()
    fr = frames(8, seed=12)
    data_pc = pcap_bytes([(1, i, f, None) for i, f in enumerate(fr)], endian=">")
    rnd = random.Random(1234)
    for i in range(300):
        src = bytearray(data_ng if i % 2 else data_pc)
        for _ in range(rnd.randrange(1, 4)):
            src[rnd.randrange(len(src))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            src = src[:rnd.randrange(len(src))]
        path = write(tmp_path, f"m{i}.cap", bytes(src))
        base = read_all(path)
        streamed = read_all(path, use_mmap=False, chunk_size=rnd.choice([1, 5, 64]))
        assert base[:2] == streamed[:2]
        assert (base[2] is None) == (streamed[2] is None)
        if base[2] is not None:
            assert (base[2].offset, base[2].message) == (streamed[2].offset, streamed[2].message)
            assert 0 <= base[2].offset <= len(src)


# ----------------------------------------------------------------------------------------------------------
# real captures: tshark and capinfos as the reference
# ----------------------------------------------------------------------------------------------------------

needs_ndpi = pytest.mark.skipif(not NDPI_PCAP.is_dir(), reason=f"nDPI captures not found at {NDPI_PCAP} "
                                "(set FLOWTAP_SHARED_DATA)")

TSHARK_FILES = [
    "1kxun.pcap",                     # pcap little-endian, Ethernet, us
    "nfsv3.pcap",                     # pcap big-endian
    "someip_sd_sample.pcap",          # pcap nanosecond magic, PPI link type
    "KakaoTalk_chat.pcap",            # pcap, Linux SLL
    "ocs.pcap",                       # pcap, raw IP
    "memcached.cap",
    "mpeg.pcap",                      # pcapng (despite the name) with epb_flags directions
    "bt-http.pcapng",                 # pcapng, ns resolution
    "openwire.pcapng",                # pcapng, null/loopback, Windows dumpcap
    "sites.pcapng",                   # mergecap output: 22 interfaces, per-interface resolutions
]


def tshark_rows(path):
    """(ts_ns, frame.len, frame.cap_len, interface id, direction) per packet, from tshark. Direction comes
    from pcapng's epb_flags or, for Linux cooked captures, from the SLL packet type (4 = outgoing, 0-3 =
    received), which the parser reads."""
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.interface_id",
                          "-e", "frame.packet_flags_direction", "-e", "sll.pkttype"],
                         capture_output=True, text=True, timeout=300).stdout
    rows = []
    for line in out.splitlines():
        t, wire, cap, ifid, direction, sll_type = line.split("\t")
        if not direction and sll_type:
            direction = "2" if int(sll_type) == 4 else "1"
        sec, _, frac = t.partition(".")
        rows.append((int(sec) * NS + int(frac.ljust(9, "0")[:9]), int(wire), int(cap), int(ifid or 0),
                     int(direction or "0", 0)))
    return rows


@needs_ndpi
@pytest.mark.ndpi
@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("name", TSHARK_FILES)
def test_against_tshark(name):
    path = NDPI_PCAP / name
    if not path.exists():
        pytest.skip(f"{path} absent")
    recs, counters, err = read_all(path)
    assert err is None, str(err)
    ref = tshark_rows(path)
    assert len(recs) == len(ref) > 0
    assert counters["bytes"] == sum(r[1] for r in ref)
    assert [r[:5] for r in recs] == ref


def capinfos_counts():
    counts = {}
    for line in (NDPI / "capinfos.tsv").read_text().splitlines():
        cols = line.split("\t")
        if len(cols) >= 4 and cols[3].isdigit():
            counts[cols[0]] = int(cols[3])
    return counts


@needs_ndpi
@pytest.mark.ndpi
def test_all_ndpi_captures():
    """Every nDPI capture reads without a crash; packet counts agree with capinfos; the files that raise
    a CaptureError are the deliberately broken ones (listed with the reason)."""
    counts = capinfos_counts()
    errors = {}
    mismatched = {}
    for path in sorted(NDPI_PCAP.iterdir()):
        if not path.is_file():
            continue
        recs_n = 0
        with CaptureReader(path) as rd:
            try:
                for pkts, _ in rd:
                    recs_n += len(pkts)
            except CaptureError as e:
                errors[path.name] = (e.offset, e.message)
        if path.name in counts and path.name not in errors and counts[path.name] != recs_n:
            mismatched[path.name] = (recs_n, counts[path.name])
    assert mismatched == {}
    assert set(errors) == set(EXPECTED_NDPI_ERRORS), errors
    for name, (off, msg) in errors.items():
        assert EXPECTED_NDPI_ERRORS[name] in msg, (name, off, msg)


# Files of the nDPI corpus that are not (complete) captures, with the reason the reader gives; each was
# checked against capinfos / tshark (see the comment at each entry).
EXPECTED_NDPI_ERRORS = {
    # not a capture; tshark: "isn't a capture file in a format TShark understands"
    "README.txt": "not a pcap or pcapng file (magic 0x506c6163)",
    # first record claims 524501 captured bytes; tshark: "appears to have been cut short in the middle of
    # a packet" (capinfos lists 1 packet: it reads a 197-byte remainder)
    "fuzz-2021-10-13.pcap": "pcap record at offset 24: captured length 524501 exceeds 262144",
}
