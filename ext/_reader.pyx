# cython: freethreading_compatible = False
"""Capture reader and packet parser: capture bytes in, struct ft_pkt records out (as numpy arrays).

The numpy dtype PKT_DTYPE mirrors struct ft_pkt and is derived from offsetof() in ft_fields.h.
"""
import numpy as np
cimport numpy as cnp
from libc.string cimport memset
from libc.stdint cimport uint8_t, uint32_t

from ft_record cimport *

cnp.import_array()

cdef extern from "ft_parse.h" nogil:
    int ft_parse(const uint8_t *data, const uint8_t *data_end, uint32_t linktype, ft_pkt *p)

cdef extern from "ft_parse_fast.h" nogil:
    int ft_parse_fast_ether(const uint8_t *data, const uint8_t *data_end, ft_pkt *p)
    int FT_FAST_DECLINED


def _pkt_dtype():
    names, formats, offsets = [], [], []
    for i in range(FT_PKT_NFIELDS):
        names.append(FT_PKT_FIELDS[i].name.decode())
        formats.append(FT_PKT_FIELDS[i].fmt.decode())
        offsets.append(FT_PKT_FIELDS[i].offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": sizeof(ft_pkt)})


PKT_DTYPE = _pkt_dtype()
PKT_SIZE = sizeof(ft_pkt)
RECORD_VERSION = FT_RECORD_VERSION
REASON_NAMES = tuple(FT_REASON_NAMES[i].decode() for i in range(FT_R__COUNT))
TUNNEL_NAMES = tuple(FT_TUNNEL_NAMES[i].decode() for i in range(FT_TUN__COUNT))
MAX_VLAN = FT_MAX_VLAN
MAX_MPLS = FT_MAX_MPLS
MAX_IPV6_EXT = FT_MAX_IPV6_EXT
MAX_TUNNEL = FT_MAX_TUNNEL


def parse_frame(const uint8_t[::1] frame not None, unsigned int linktype=1, wire_len=None,
                unsigned long long ts_ns=0, int path=0):
    """Parse one frame; return its record as a numpy structured scalar of PKT_DTYPE.

    path: 0 the general parser (ft_parse), 1 the fast path only (ft_parse_fast_ether; None when it declines
    the frame), 2 both as the reader does (fast path, else the general parser). For tests and tools (one
    Python object per call): the replay path never calls this.
    """
    out = np.zeros(1, dtype=PKT_DTYPE)
    cdef ft_pkt *p = <ft_pkt *> cnp.PyArray_DATA(out)
    cdef Py_ssize_t n = frame.shape[0]
    cdef const uint8_t *base = &frame[0] if n > 0 else NULL
    p.ts_ns = ts_ns
    p.cap_len = <uint32_t> n
    p.wire_len = <uint32_t> (n if wire_len is None else wire_len)
    if p.cap_len < p.wire_len:
        p.flags |= FT_F_TRUNC
    if path and linktype == 1 and ft_parse_fast_ether(base, base + n, p) != FT_FAST_DECLINED:
        return out[0]
    if path == 1:
        return None
    ft_parse(base, base + n, linktype, p)
    return out[0]


# ---------------------------------------------------------------------------------------------------------
# Capture reader: pcap / pcapng files (plain, gzip, zstd) -> batches of struct ft_pkt
# ---------------------------------------------------------------------------------------------------------
import mmap as _mmap
import stat as _stat
import os as _os
import zlib as _zlib

from libc.stdlib cimport calloc, free
from libc.string cimport memmove, memcpy
from libc.stdint cimport uint64_t

cdef extern from "ft_reader.h" nogil:
    enum:
        FT_MAX_FRAME
        FT_MAX_BLOCK
        FT_MAX_IFACES
        FT_RD_MAX_BATCH
        FT_RD_ERROR
        FT_RD_YIELD
        FT_RD_MORE
        FT_RD_END
        FT_FMT_NONE
        FT_FMT_PCAP
        FT_FMT_PCAPNG

    struct ft_reader_counters:
        uint64_t packets
        uint64_t bytes
        uint64_t cap_bytes
        uint64_t truncated
        uint64_t over_snaplen
        uint64_t caplen_over_wire
        uint64_t skipped_blocks
        uint64_t sections
        uint64_t interfaces
        uint64_t simple_packets
        uint64_t obsolete_packets
        uint64_t bad_options
        uint64_t ts_clamped

    struct ft_reader:
        uint64_t buf_abs
        uint8_t format
        uint8_t pcap_ns
        uint8_t pcap_fcs_len
        uint32_t pcap_linktype
        uint32_t pcap_snaplen
        uint32_t n_ifaces
        uint64_t err_off
        char err_msg[200]
        ft_reader_counters c

    void ft_reader_init(ft_reader *r)
    int ft_reader_run(ft_reader *r, const uint8_t *buf, size_t len, size_t *pos, int eof,
                      ft_pkt *out, uint32_t max, uint32_t *n_out)

MAX_FRAME = FT_MAX_FRAME
MAX_BLOCK = FT_MAX_BLOCK
MAX_IFACES = FT_MAX_IFACES

# compressed input is read in pieces of this size (zlib input, zstd read_size)
cdef enum:
    _IN_CHUNK = 1 << 20
_COUNTER_NAMES = ("packets", "bytes", "cap_bytes", "truncated", "over_snaplen", "caplen_over_wire",
                  "skipped_blocks", "sections", "interfaces", "simple_packets", "obsolete_packets",
                  "bad_options", "ts_clamped")


def _compression_of(head: bytes):
    """"gzip" or "zstd" when the first bytes are that format's magic (1f8b; 28b52ffd), else None."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


class _ZstdFrameWalker:
    """The compressed file as zstandard's stream_reader sees it, walking the frame structure (RFC 8878:
    frame header, block headers, checksum, skippable frames) of the bytes it passes on: the decompressor
    reports no error when its input ends inside a frame, this tells. Costs a few operations per block
    (<= 128 KiB of output)."""

    def __init__(self, fh):
        self._fh = fh
        self._state = "magic"  # the header being collected: magic, fhd, skipsize, block, or "invalid"
        self._hdr = bytearray()
        self._skip = 0  # payload bytes to pass before the next header
        self._after_block = "block"
        self._checksum = False

    def read(self, n=-1):
        data = self._fh.read(n)
        self._walk(data)
        return data

    def tell(self):
        return self._fh.tell()

    def complete(self):
        return self._state in ("magic", "invalid") and self._skip == 0 and not self._hdr

    def _walk(self, data):
        cdef Py_ssize_t i = 0, n = len(data), take
        while i < n and self._state != "invalid":
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            need = {"magic": 4, "fhd": 1, "skipsize": 4, "block": 3}[self._state]
            take = min(need - len(self._hdr), n - i)
            self._hdr += data[i:i + take]
            i += take
            if len(self._hdr) < need:
                break
            h = int.from_bytes(self._hdr, "little")
            self._hdr.clear()
            if self._state == "magic":
                if h == 0xFD2FB528:
                    self._state = "fhd"
                elif 0x184D2A50 <= h <= 0x184D2A5F:
                    self._state = "skipsize"
                else:
                    self._state = "invalid"  # not zstd: the decompressor reports it
            elif self._state == "skipsize":
                self._skip = h
                self._state = "magic"
            elif self._state == "fhd":
                single = (h >> 5) & 1
                self._checksum = bool((h >> 2) & 1)
                self._skip = ((0 if single else 1) + (0, 1, 2, 4)[h & 3]
                              + ((1 if single else 0), 2, 4, 8)[h >> 6])
                self._state = "block"
            else:  # block header: last flag, type, size
                btype = (h >> 1) & 3
                if btype == 3:
                    self._state = "invalid"
                    continue
                self._skip = 1 if btype == 1 else h >> 3
                if h & 1:
                    self._skip += 4 if self._checksum else 0
                    self._state = "magic"


RELEASE_STEP = 16 << 20  # bytes of a mapped capture released at a time once read


cdef class CaptureReader:
    """Reads one capture file (classic pcap or pcapng; plain, gzip or zstd) in batches of packet records.

    Iterating yields ``(pkts, data)``: ``pkts`` a numpy array of PKT_DTYPE (at most ``batch_size``
    records), ``data`` a read-only uint8 array; record ``i``'s frame is
    ``data[pkts["frame_off"][i] : pkts["frame_off"][i] + pkts["cap_len"][i]]``. Both are views onto memory
    the reader reuses: they are valid until the next iteration step (copy what must live longer).

    Plain files are mapped whole (frame_off is then the file offset); gzip (magic 1f8b, concatenated
    members allowed) and zstd (28b52ffd, several frames allowed) are decompressed in ``chunk_size`` pieces
    into a fixed buffer of FT_MAX_BLOCK + 4 * chunk_size bytes. A malformed capture raises
    ``dpi.capture.CaptureError(path, offset, message)`` (offset in the decompressed stream) after every
    complete record before the fault has been yielded. ``iface`` is the pcapng interface id within its
    section, 0 for classic pcap.

    Progress: ``bytes_consumed`` (bytes of the file on disk read so far: compressed bytes for compressed
    files) against ``total_bytes``; ``packets``; ``counters`` (dict).
    """
    cdef ft_reader *_r
    cdef readonly object path
    cdef readonly str compression
    cdef readonly uint64_t total_bytes
    cdef readonly Py_ssize_t batch_size
    cdef readonly Py_ssize_t chunk_size
    cdef object _fh
    cdef object _mm
    cdef size_t _released
    cdef object _zstd
    cdef object _zstd_frames
    cdef object _zdec
    cdef bytes _zin
    cdef uint64_t _zin_read
    cdef object _pkts
    cdef object _data
    cdef ft_pkt *_out
    cdef uint8_t *_buf
    cdef size_t _len
    cdef size_t _pos
    cdef size_t _cap
    cdef bint _stream
    cdef bint _pipe    # not a regular file: yield what has arrived before blocking for more
    cdef bint _eof
    cdef bint _done
    cdef bint _compact_pending
    cdef object _pending_error
    cdef str _stream_error

    def __cinit__(self):
        self._r = <ft_reader *> calloc(1, sizeof(ft_reader))
        if self._r == NULL:
            raise MemoryError()
        ft_reader_init(self._r)

    def __dealloc__(self):
        free(self._r)

    def __init__(self, path, Py_ssize_t batch_size=8192, *, Py_ssize_t chunk_size=4 << 20,
                 bint use_mmap=True):
        if batch_size < 1 or batch_size > FT_RD_MAX_BATCH:
            raise ValueError(f"batch_size must be in 1..{FT_RD_MAX_BATCH}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.path = path
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self._pkts = np.zeros(batch_size, dtype=PKT_DTYPE)
        self._out = <ft_pkt *> cnp.PyArray_DATA(self._pkts)
        self._fh = open(path, "rb")
        try:
            st = _os.fstat(self._fh.fileno())
            # pipes, FIFOs and character devices have no size and cannot be mapped: read them as streams
            regular = _stat.S_ISREG(st.st_mode)
            self.total_bytes = st.st_size if regular else 0
            self._pipe = not regular
            self.compression = _compression_of(self._fh.peek(4)[:4]) or "none"
            if self.compression == "gzip":
                self._zdec = _zlib.decompressobj(31)
                self._zin = b""
            elif self.compression == "zstd":
                import zstandard
                self._zstd_frames = _ZstdFrameWalker(self._fh)
                self._zstd = zstandard.ZstdDecompressor().stream_reader(
                    self._zstd_frames, read_size=_IN_CHUNK, read_across_frames=True, closefd=False)
            else:
                self.compression = "none"
                if use_mmap and regular and self.total_bytes > 0:
                    try:
                        self._mm = _mmap.mmap(self._fh.fileno(), 0, access=_mmap.ACCESS_READ)
                    except (OSError, ValueError):
                        self._mm = None  # not mappable (pipe, ...): read it as a stream
                if self._mm is not None:
                    if hasattr(self._mm, "madvise"):
                        self._mm.madvise(_mmap.MADV_SEQUENTIAL)
                    self._data = np.frombuffer(self._mm, dtype=np.uint8)
                    self._len = self._data.shape[0]
                elif regular and self.total_bytes == 0 and use_mmap:
                    self._data = np.zeros(0, dtype=np.uint8)
                    self._len = 0
            if self._data is None:
                self._stream = True
                self._cap = FT_MAX_BLOCK + 4 * <size_t> chunk_size
                self._data = np.empty(self._cap, dtype=np.uint8)
            else:
                self._eof = True
            self._buf = <uint8_t *> cnp.PyArray_DATA(self._data)
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Release the file and the buffers. Views handed out before stay readable for a mapped file only
        as long as they are referenced (the mapping closes when the last one goes)."""
        self._done = True
        self._pending_error = None
        self._data = None
        self._buf = NULL
        self._len = self._pos = 0
        if self._zstd is not None:
            self._zstd = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # a caller still holds a view of the mapping; it is unmapped when that goes
            self._mm = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @property
    def packets(self):
        return self._r.c.packets

    @property
    def bytes_consumed(self):
        """Bytes of the file on disk consumed so far (compressed bytes for compressed files)."""
        if self._mm is not None or (self._stream and self.compression == "none" and self._fh is None):
            return self._r.buf_abs + self._pos
        if self.compression == "gzip":
            return self._zin_read - len(self._zin)
        if self._fh is not None:
            try:
                return self._fh.tell()
            except (OSError, ValueError):
                return 0
        return self.total_bytes if self._done else 0

    @property
    def format(self):
        """'pcap', 'pcapng', or None before the first bytes were read."""
        return {FT_FMT_PCAP: "pcap", FT_FMT_PCAPNG: "pcapng"}.get(self._r.format)

    @property
    def counters(self):
        """Reader counters: packets, bytes (original lengths), cap_bytes, truncated (cap < wire),
        over_snaplen, caplen_over_wire, skipped_blocks, sections, interfaces, simple_packets,
        obsolete_packets, bad_options, ts_clamped."""
        cdef ft_reader_counters c = self._r.c
        vals = (c.packets, c.bytes, c.cap_bytes, c.truncated, c.over_snaplen, c.caplen_over_wire,
                c.skipped_blocks, c.sections, c.interfaces, c.simple_packets, c.obsolete_packets,
                c.bad_options, c.ts_clamped)
        return dict(zip(_COUNTER_NAMES, vals))

    @property
    def pcap_linktype(self):
        """Classic pcap: the file's link type (FCS bits masked off); None for pcapng."""
        return self._r.pcap_linktype if self._r.format == FT_FMT_PCAP else None

    @property
    def pcap_fcs_len(self):
        """Classic pcap: FCS bytes per frame announced in the link type field (0 when not announced)."""
        return self._r.pcap_fcs_len

    def __iter__(self):
        return self

    def __next__(self):
        cdef uint32_t n = 0, got = 0
        cdef int st
        cdef uint32_t want
        if self._pending_error is not None:
            err = self._pending_error
            self._pending_error = None
            self._done = True
            raise err
        if self._done or self._buf == NULL:
            raise StopIteration
        if self._compact_pending:
            self._compact()
        if self._mm is not None and self._pos >= self._released + RELEASE_STEP:
            # The previous batch is done with: give the mapped pages behind the read position back, so
            # that a multi-GB capture does not show up whole in the resident set (it stays in page cache).
            upto = (self._pos // _mmap.PAGESIZE) * _mmap.PAGESIZE
            if hasattr(self._mm, "madvise"):
                self._mm.madvise(_mmap.MADV_DONTNEED, self._released, upto - self._released)
            self._released = upto
        while True:
            want = <uint32_t> (self.batch_size - n)
            with nogil:
                st = ft_reader_run(self._r, self._buf, self._len, &self._pos, self._eof,
                                   self._out + n, want, &got)
            n += got
            if st == FT_RD_YIELD:
                if n >= <uint32_t> self.batch_size:
                    break
                continue  # the reader's step bound: more records may follow in this buffer
            elif st == FT_RD_MORE:
                # pending records point into the buffer: append behind them while there is room,
                # else hand them out first and move the incomplete record to the front next time
                if n > 0 and (self._pipe or self._cap - self._len < <size_t> self.chunk_size):
                    self._compact_pending = True
                    break
                if n == 0:
                    self._compact()
                if self._fill() == 0:
                    self._eof = True
                continue
            elif st == FT_RD_END:
                self._done = True
                if self._stream_error is not None:
                    err = self._error(self._r.buf_abs + self._len, self._stream_error)
                    if n == 0:
                        raise err
                    self._pending_error = err
                break
            else:
                msg = self._r.err_msg.decode("utf-8", "replace")
                if self._stream_error is not None:
                    # nothing decompressed at all: the stream's fault is the whole story
                    msg = self._stream_error if msg == "empty file" else f"{msg} ({self._stream_error})"
                elif self.compression != "none" and self._r.err_off == 0 and self._r.buf_abs == 0:
                    inner = _compression_of(bytes(self._data[:min(<Py_ssize_t> self._len, 4)]))
                    if inner is not None:
                        msg += (f"; the {self.compression}-decompressed data is compressed again ({inner}): "
                                f"decompress the file once first")
                err = self._error(self._r.err_off, msg)
                self._done = True
                if n == 0:
                    raise err
                self._pending_error = err
                break
        if n == 0:
            raise StopIteration
        data = self._data[:self._len]
        data.flags.writeable = False
        return self._pkts[:n], data

    cdef _error(self, uint64_t offset, str message):
        from dpi.capture import CaptureError
        return CaptureError(self.path, offset, message)

    cdef _compact(self):
        """Move the unconsumed tail (an incomplete record, < FT_MAX_BLOCK bytes) to the buffer start."""
        cdef size_t keep = self._len - self._pos
        self._compact_pending = False
        if self._pos == 0:
            return
        if keep:
            memmove(self._buf, self._buf + self._pos, keep)
        self._r.buf_abs += self._pos
        self._len = keep
        self._pos = 0

    cdef size_t _fill(self) except? 0:
        """Append up to chunk_size decompressed bytes at the end of the buffer. Returns the count, 0 at the
        end of the input; a decompression fault is kept in _stream_error and ends the input."""
        cdef size_t room = self._cap - self._len
        cdef size_t k = 0
        if room > <size_t> self.chunk_size:
            room = self.chunk_size
        if room == 0 or self._stream_error is not None:
            return 0
        view = memoryview(self._data)[self._len:self._len + room]
        try:
            if self.compression == "gzip":
                k = self._fill_gzip(view, room)
            elif self.compression == "zstd":
                k = self._zstd.readinto(view) or 0
                if k == 0 and not self._zstd_frames.complete():
                    self._stream_error = "zstd stream truncated (the input ends inside a frame)"
            else:
                if self._pipe:
                    # a pipe gives what it has, so that packets already written reach the engine without
                    # waiting for a full chunk: read1 returns buffered bytes without another read, where
                    # readinto1 would block in a second read (CPython, large destination buffers)
                    got = self._fh.read1(room)
                    k = len(got)
                    view[:k] = got
                else:
                    k = self._fh.readinto(view) or 0
        except Exception as e:  # zlib.error, zstandard.ZstdError, OSError
            self._stream_error = f"{self.compression} decompression failed: {e}"
            if "too much memory" in str(e):
                # zstandard's limit, as the zstd tool's without --long: a window above 128 MiB is refused
                # rather than allocated on the word of a file header
                self._stream_error += (" (the frame asks for a window above 128 MiB; if the file is genuine, "
                                       "made with zstd --long, decompress it first: zstd -d --long=31)")
            k = 0
        self._len += k
        return k

    cdef size_t _fill_gzip(self, view, size_t room) except? 0:
        cdef size_t k
        while True:
            if not self._zin:
                self._zin = self._fh.read(_IN_CHUNK)
                self._zin_read += len(self._zin)
                if not self._zin:
                    # input exhausted: flush what inflate still holds, then check the member ended
                    out = self._zdec.decompress(b"", room)
                    if out:
                        k = len(out)
                        view[:k] = out
                        return k
                    if not self._zdec.eof:
                        self._stream_error = "gzip stream truncated (the last member has no end)"
                    return 0
            if self._zdec.eof:
                self._zdec = _zlib.decompressobj(31)  # the next of concatenated members
            out = self._zdec.decompress(self._zin, room)
            self._zin = self._zdec.unused_data if self._zdec.eof else self._zdec.unconsumed_tail
            if out:
                k = len(out)
                view[:k] = out
                return k
