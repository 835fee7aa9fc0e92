"""The fuzz targets: one function per layer, taking the fuzzer's bytes. Each raises on a finding (a broken
invariant, an exception other than the documented ones); AddressSanitizer aborts on a bad read or write.

No atheris here: fuzz/fuzz.py drives these under libFuzzer with the instrumented build, and
tests/test_fuzz_regressions.py replays the saved findings (tests/fuzz_cases/) through the same functions
with the normal build.

Input layouts (the seed builder, fuzz/seeds.py, writes the same):
  parser     linktype selector (1 byte, index into LINKTYPES) + frame (Ethernet: also the fast path)
  reader     split point (2 bytes, big-endian, modulo the length) + capture file bytes
  dpi-<l4>-<name>  control byte + [2-byte split points] + payload (see dpi_views)
  e2e        linktype selector (1 byte) + frames, each as a 2-byte big-endian length and its bytes
  reader-compressed  control byte + cut point (2 bytes, big-endian) + capture file bytes (see reader_compressed)
"""
from __future__ import annotations

import ctypes
import os
import struct
import tempfile

import numpy as np

from dpi._reader import PKT_DTYPE, REASON_NAMES, CaptureReader, parse_frame
from dpi._flowtable import FlowTable, dpi_dissect, dpi_dissectors

# Ethernet, raw IP (101, 12, 14), IPv4, IPv6, Linux SLL and SLL2, BSD loopback (0, 108), and one the parser
# does not know (147, DLT_USER0)
LINKTYPES = (1, 101, 228, 229, 113, 276, 0, 108, 12, 14, 147)



def exact(data: bytes) -> np.ndarray:
    """A heap copy of exactly len(data) bytes (numpy allocates with malloc), so that AddressSanitizer sees a
    read one past the end; Python bytes objects live in pymalloc arenas and end in a NUL."""
    return np.frombuffer(data, dtype=np.uint8).copy()


# ---- parser ----------------------------------------------------------------------------------------------

def check_record(rec) -> None:
    cap = int(rec["cap_len"])
    if int(rec["payload_cap"]) and int(rec["payload_off"]) + int(rec["payload_cap"]) > cap:
        raise AssertionError(f"payload [{rec['payload_off']}, +{rec['payload_cap']}) beyond cap_len {cap}")
    if int(rec["reason"]) >= len(REASON_NAMES):
        raise AssertionError(f"reason code {rec['reason']}")


def same_as_general(quick, general) -> None:
    """The fast path's contract (ext/ft_parse_fast.h): a frame it takes gets exactly ft_parse()'s record."""
    if quick is None:
        return
    diff = [f for f in PKT_DTYPE.names if quick[f].tobytes() != general[f].tobytes()]
    if diff:
        raise AssertionError(f"fast path and ft_parse() differ in {diff}")


def parser(data: bytes) -> None:
    """ft_parse() on the frame, whole and marked cut by the snap length; for Ethernet also the replay reader's
    and live probe's fast path (ft_parse_fast_ether), which must agree with ft_parse() on every frame it takes."""
    if not data:
        return
    linktype = LINKTYPES[data[0] % len(LINKTYPES)]
    frame = exact(data[1:])
    for wire_len in (None, len(frame) + 1000):  # whole; cut by the snap length (wire length above the captured)
        rec = parse_frame(frame, linktype, wire_len=wire_len)
        check_record(rec)
        if linktype == 1:
            same_as_general(parse_frame(frame, 1, wire_len=wire_len, path=1), rec)


# ---- reader (ft_reader_run through ctypes on an exact-size buffer) ----------------------------------------

_lib = None
_reader_size = None
BATCH = 64
FT_RD_ERROR, FT_RD_YIELD, FT_RD_MORE, FT_RD_END = -1, 1, 2, 3
CALLS_MAX = 100000  # far above what any input of the fuzzer's size needs: more means the reader spins


def _reader_lib():
    global _lib, _reader_size
    if _lib is None:
        import dpi._reader as mod
        _lib = ctypes.CDLL(mod.__file__)
        _lib.ft_reader_init.argtypes = [ctypes.c_void_p]
        _lib.ft_reader_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                       ctypes.POINTER(ctypes.c_size_t), ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
        _lib.ft_reader_run.restype = ctypes.c_int
        # struct ft_reader is about 35 kB (1024 interfaces); fuzz/build.py measures it, else a wide margin
        size_file = os.path.join(os.path.dirname(__file__), "build", "sizeof_ft_reader")
        try:
            _reader_size = int(open(size_file).read())
        except OSError:
            _reader_size = 1 << 20
    return _lib


def read_capture(data: bytes, split: int | None = None):
    """All records of a capture held in memory, and how it ended: (records with absolute frame offsets,
    status, error offset, error message). split: feed data[:split] first without eof, then, as the reader's
    contract says, the unconsumed tail and the rest in a new buffer."""
    lib = _reader_lib()
    r = ctypes.create_string_buffer(_reader_size)
    lib.ft_reader_init(r)
    buf_abs = ctypes.c_uint64.from_buffer(r, 0)  # first member of struct ft_reader
    out = np.zeros(BATCH, dtype=PKT_DTYPE)
    got = ctypes.c_uint32()
    recs = []
    pieces = [(data, True)] if split is None else [(data[:split], False), (None, True)]
    carried = b""
    st = FT_RD_END
    calls = 0
    for piece, eof in pieces:
        chunk = carried + (piece if piece is not None else data[split:])
        arr = exact(chunk) if chunk else np.zeros(1, np.uint8)
        pos = ctypes.c_size_t(0)
        while True:
            calls += 1
            if calls > CALLS_MAX:
                raise AssertionError("ft_reader_run makes no progress")
            st = lib.ft_reader_run(r, arr.ctypes.data, len(chunk), ctypes.byref(pos), int(eof),
                                   out.ctypes.data, BATCH, ctypes.byref(got))
            if got.value:
                part = out[:got.value].copy()
                part["frame_off"] += buf_abs.value
                recs.append(part)
            if pos.value > len(chunk):
                raise AssertionError(f"pos {pos.value} beyond the buffer ({len(chunk)})")
            if st == FT_RD_YIELD:
                continue
            break
        if st == FT_RD_MORE:
            if eof:
                raise AssertionError("FT_RD_MORE with eof set")
            carried = chunk[pos.value:]
            buf_abs.value += pos.value
            continue
        break
    err_off = ctypes.c_uint64.from_buffer(r, _ERR_OFF).value if st == FT_RD_ERROR else None
    records = np.concatenate(recs) if recs else np.zeros(0, dtype=PKT_DTYPE)
    return records, st, err_off


# offset of err_off in struct ft_reader (ext/ft_reader.h): buf_abs(8) + 8 one-byte fields + linktype,
# snaplen, n_ifaces (12) + major, minor (4) + last_ts_ns, skip_left, skip_block_abs (24) + skip_total_len,
# _pad (8)
_ERR_OFF = 8 + 8 + 12 + 4 + 24 + 8


def reader(data: bytes) -> None:
    if len(data) < 2:
        return
    split = struct.unpack(">H", data[:2])[0]
    capture = data[2:]
    whole, st, err_off = read_capture(capture)
    for rec in whole:
        if int(rec["frame_off"]) + int(rec["cap_len"]) > len(capture):
            raise AssertionError(f"frame [{rec['frame_off']}, +{rec['cap_len']}) beyond the file")
        check_record(rec)
    if st not in (FT_RD_END, FT_RD_ERROR):
        raise AssertionError(f"status {st} at the end of the input")
    # the reader's promise: the same results whatever the buffer pieces are
    k = split % (len(capture) + 1)
    parts, st2, err_off2 = read_capture(capture, k)
    if (st2, err_off2) != (st, err_off) or parts.tobytes() != whole.tobytes():
        raise AssertionError(f"split at {k}: {len(parts)} records, status {st2} at {err_off2}; "
                             f"whole: {len(whole)} records, status {st} at {err_off}")


# ---- compressed captures: gzip and zstd through CaptureReader's decompression (ext/_reader.pyx) -----------

_tmpdir = None
COMPRESSED_CHUNKS = (64, 512, 4096, 1 << 16)   # CaptureReader chunk_size: decompressed bytes handed on at a time


def _scratch_dir() -> str:
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="flowtap-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    return _tmpdir


def read_file(path: str, **kw):
    """Every record CaptureReader yields for a file, as (records without frame_off, their frame bytes) and how
    the read ended: None, or the CaptureError's (offset, message). Only CaptureError may end a read early."""
    from dpi.capture import CaptureError
    recs, frames, err = [], [], None
    try:
        with CaptureReader(path, batch_size=7, **kw) as rd:
            for pkts, data in rd:
                for rec in pkts:
                    off, cap = int(rec["frame_off"]), int(rec["cap_len"])
                    if off + cap > len(data):
                        raise AssertionError(f"frame [{off}, +{cap}) beyond the reader's data ({len(data)})")
                    check_record(rec)
                    frames.append(bytes(data[off:off + cap]))
                    # field by field: the record's padding bytes are not part of it (a copy need not keep them)
                    recs.append(b"".join(rec[f].tobytes() for f in PKT_DTYPE.names if f != "frame_off"))
    except CaptureError as e:
        err = (e.offset, e.message)
    return recs, frames, err


def compare_reads(plain, comp, cut: bool) -> None:
    """The oracle: a compressed file gives the records of the capture it holds, and ends as reading that
    capture uncompressed ends (same fault offset and message). A compressed stream cut short gives a prefix
    of those records; its ending is then a fault of its own (a cut stream, or the capture cut inside a
    record), or none when the cut fell where both the stream and the capture may end."""
    (precs, pframes, perr), (crecs, cframes, cerr) = plain, comp
    if not cut:
        if (crecs, cframes) != (precs, pframes):
            raise AssertionError(f"compressed: {len(crecs)} records, plain: {len(precs)}; first difference at "
                                 f"{next((i for i, (a, b) in enumerate(zip(crecs, precs)) if a != b), min(len(crecs), len(precs)))}")
        if cerr != perr:
            raise AssertionError(f"compressed read ended with {cerr}, plain with {perr}")
        return
    n = len(crecs)
    if n > len(precs) or crecs != precs[:n] or cframes != pframes[:n]:
        raise AssertionError(f"cut compressed stream: {n} records are not a prefix of the plain file's {len(precs)}")


def reader_compressed(data: bytes) -> None:
    """Control byte: bit 0 zstd (else gzip); bits 1-4 the number of gzip members or zstd frames - 1, cut at
    even shares of the capture; bit 5 cut the compressed file at the cut point; bit 6 zstd frames with content
    checksums and a skippable frame between frames; bit 7 the bytes after the cut point are not compressed
    but follow the format's magic as they are (a corrupt stream: only CaptureError may come out). Bits 1-2
    also pick the reader's chunk size."""
    import gzip
    import zstandard
    if len(data) < 3:
        return
    ctrl, cut_at = data[0], struct.unpack(">H", data[1:3])[0]
    capture = data[3:]
    use_zstd, pieces, cut, extras = ctrl & 1, ((ctrl >> 1) & 15) + 1, bool(ctrl & 32), bool(ctrl & 64)
    chunk = COMPRESSED_CHUNKS[(ctrl >> 1) & 3]
    d = _scratch_dir()
    comp_path = os.path.join(d, "c.zst" if use_zstd else "c.gz")
    if ctrl & 128:
        magic = b"\x28\xb5\x2f\xfd" if use_zstd else b"\x1f\x8b"
        with open(comp_path, "wb") as f:
            f.write(magic + capture)
        read_file(comp_path, chunk_size=chunk, use_mmap=False)
        return
    plain_path = os.path.join(d, "c.pcap")
    with open(plain_path, "wb") as f:
        f.write(capture)
    bounds = [len(capture) * i // pieces for i in range(pieces + 1)]
    parts = [capture[bounds[i]:bounds[i + 1]] for i in range(pieces)]
    if use_zstd:
        cz = zstandard.ZstdCompressor(level=1, write_checksum=extras, write_content_size=not extras)
        skippable = struct.pack("<II", 0x184D2A5A, 3) + b"fzz" if extras else b""
        blob = skippable.join(cz.compress(p) for p in parts)
    else:
        blob = b"".join(gzip.compress(p, compresslevel=1, mtime=0) for p in parts)
    if cut:
        blob = blob[:cut_at % (len(blob) + 1)]
    with open(comp_path, "wb") as f:
        f.write(blob)
    comp = read_file(comp_path, chunk_size=chunk, use_mmap=False)
    if capture[:2] == b"\x1f\x8b" or capture[:4] == b"\x28\xb5\x2f\xfd":
        return  # the "plain" file is compressed itself: the reader undoes one layer only, nothing to compare
    compare_reads(read_file(plain_path), comp, cut)


# ---- DPI: one dissector, called directly ----------------------------------------------------------------

def dpi_views(proto: str, data: bytes):
    """Control byte c: c & 3 split points (2 bytes each, big-endian, modulo the payload length) follow;
    bit 2: the last view is final (FT_DPI_FINAL); bits 3..6: direction of views 0..3. TCP views are the
    growing prefixes the registry's reassembly shows; UDP views are the datagrams between the splits."""
    if not data:
        return []
    c = data[0]
    nsplit = c & 3
    head = data[1:1 + 2 * nsplit]
    payload = data[1 + 2 * nsplit:]
    if not payload:
        return []
    cuts = sorted({struct.unpack(">H", head[i:i + 2])[0] % len(payload) for i in range(0, len(head) - 1, 2)}
                  - {0}) + [len(payload)]
    views, start = [], 0
    for k, end in enumerate(cuts):
        arg = (c >> (3 + k)) & 1
        if k == len(cuts) - 1 and c & 4:
            arg |= 2
        views.append((payload[:end] if proto == "tcp" else payload[start:end], arg))
        start = end
    return views


def dpi_target(proto: str, name: str):
    def run(data: bytes) -> None:
        answers, fields, unterminated = dpi_dissect(proto, name, dpi_views(proto, data))
        if unterminated:
            raise AssertionError(f"{proto}/{name}: fields without NUL: {unterminated}")
        if any(a not in (0, 1, 2) for a in answers):
            raise AssertionError(f"{proto}/{name}: answers {answers}")
    run.__name__ = f"dpi_{proto}_{name}"
    return run


def dpi_names():
    return [(proto, name) for proto, table in dpi_dissectors().items() for name, _ in table]


# ---- end to end: bytes -> pcap file -> CaptureReader -> FlowTable with DPI ---------------------------------


def frames_to_pcap(linktype: int, frames) -> bytes:
    out = [struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, linktype)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f)
    return b"".join(out)


def e2e(data: bytes):
    """Returns the flow records (FLOWREC_DTYPE) the table exported and their DPI parts (DPI_OUT_DTYPE, row i
    belonging to record i)."""
    if not data:
        return None
    linktype = LINKTYPES[data[0] % len(LINKTYPES)]
    frames, i = [], 1
    while i + 2 <= len(data) and len(frames) < 64:
        n = struct.unpack(">H", data[i:i + 2])[0] % 2048
        frames.append(data[i + 2:i + 2 + n])
        i += 2 + n
    path = os.path.join(_scratch_dir(), "e2e.pcap")
    with open(path, "wb") as f:
        f.write(frames_to_pcap(linktype, frames))
    table = FlowTable(max_flows=16, batch_rows=64, dpi_budget=8)
    flows, dpi = [], []
    # small chunks: the reader's compaction and refill run on every input, not only on large files
    with CaptureReader(path, batch_size=7, chunk_size=512, use_mmap=False) as rd:
        for recs, buf in rd:
            start = 0
            while start < len(recs):
                start = table.add(recs, start, buf)
                flows.append(table.take())
                dpi.append(table.taken_dpi)
    table.flush()
    flows.append(table.take())
    dpi.append(table.taken_dpi)
    return np.concatenate(flows), np.concatenate(dpi)


TARGETS = {"parser": parser, "reader": reader, "reader-compressed": reader_compressed, "e2e": e2e}


def target(name: str):
    if name in TARGETS:
        return TARGETS[name]
    if name.startswith("dpi-"):
        _, proto, dname = name.split("-", 2)
        return dpi_target(proto, dname)
    raise KeyError(name)


def all_targets():
    return ["parser", "reader", "reader-compressed"] + [f"dpi-{p}-{n}" for p, n in dpi_names()] + ["e2e"]
