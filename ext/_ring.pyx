# cython: freethreading_compatible = False
"""Ring-buffer drain of the live probe: BPF ring samples -> numpy arrays of PKT_DTYPE, without a Python
object per packet (ft_ring.h does the work without the GIL).

    ring = RingReader(map_fd, ring_bytes)
    n, used = ring.drain(pkts, data, snippet_len, ts_offset_ns)   # pkts: PKT_DTYPE array, data: uint8 array
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport sysconf, _SC_PAGESIZE

from ft_record cimport ft_pkt

cnp.import_array()

cdef extern from "ft_ring.h" nogil:
    struct ft_ring:
        volatile uint64_t *consumer_pos
        const volatile uint64_t *producer_pos
        const uint8_t *data
        uint64_t mask
        uint64_t samples
        uint64_t discarded
        uint64_t malformed
        uint64_t snippet_bytes
        uint64_t snippets_cut
        uint64_t gso_split
        uint64_t gso_unsplit
    uint64_t ft_ring_drain(ft_ring *r, ft_pkt *out, uint32_t max, uint8_t *data, uint64_t data_cap,
                           uint64_t *data_used, uint16_t *snippet_len, int64_t ts_offset_ns, uint32_t *n_out)

cdef extern from "../probe/bpf/ft_live.h":
    enum:
        FT_LC__END
        FT_LIVE_SAMPLE_HDR
    cdef struct ft_live_sample:
        pass
    cdef struct ft_live_key:
        pass
    cdef struct ft_live_flow:
        pass

SAMPLE_SIZE = sizeof(ft_live_sample)   # with the default FT_SNAP_LEN of ft_live.h (tests compare)
KEY_SIZE = sizeof(ft_live_key)
FLOW_SIZE = sizeof(ft_live_flow)
COUNTERS = FT_LC__END
SAMPLE_HDR = FT_LIVE_SAMPLE_HDR


cdef class RingReader:
    """Consumer of one BPF ring buffer map (BPF_MAP_TYPE_RINGBUF): maps it and drains it in batches.

    The map stays open as long as its fd does (the caller's BCC object owns it); close() unmaps."""
    cdef ft_ring r
    cdef void *cons_map
    cdef void *prod_map
    cdef size_t page
    cdef size_t prod_len
    cdef readonly uint64_t ring_bytes

    def __cinit__(self, int map_fd, uint64_t ring_bytes):
        if ring_bytes == 0 or (ring_bytes & (ring_bytes - 1)) != 0:
            raise ValueError(f"ring size {ring_bytes} is not a power of two")
        self.page = <size_t> sysconf(_SC_PAGESIZE)
        self.ring_bytes = ring_bytes
        self.cons_map = mmap(NULL, self.page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0)
        if self.cons_map == MAP_FAILED:
            self.cons_map = NULL
            raise OSError("mmap of the ring buffer's consumer page failed")
        self.prod_len = self.page + 2 * ring_bytes
        self.prod_map = mmap(NULL, self.prod_len, PROT_READ, MAP_SHARED, map_fd, self.page)
        if self.prod_map == MAP_FAILED:
            self.prod_map = NULL
            raise OSError("mmap of the ring buffer's producer pages failed")
        self.r.consumer_pos = <volatile uint64_t *> self.cons_map
        self.r.producer_pos = <const volatile uint64_t *> self.prod_map
        self.r.data = <const uint8_t *> self.prod_map + self.page
        self.r.mask = ring_bytes - 1

    def drain(self, pkts, uint8_t[::1] data not None, uint16_t[::1] snippet_len not None,
              int64_t ts_offset_ns=0, Py_ssize_t start=0, uint64_t data_start=0):
        """Fill pkts[start:] (a PKT_DTYPE array) from the ring; snippets into data[data_start:].

        Returns (records, data_used, more): records written from `start`, the end of the snippets in data,
        and whether samples were left behind (batch or data full)."""
        if self.prod_map == NULL:
            raise ValueError("ring closed")
        cdef uint8_t[::1] raw = pkts.view(np.uint8)
        cdef Py_ssize_t cap = len(pkts)
        if pkts.dtype.itemsize != sizeof(ft_pkt) or start < 0 or start > cap or snippet_len.shape[0] < cap:
            raise ValueError("pkts must be a PKT_DTYPE array, snippet_len at least as long")
        cdef uint32_t n = 0
        cdef uint64_t used = data_start
        cdef uint64_t more
        cdef ft_pkt *out = (<ft_pkt *> &raw[0]) + start if cap > 0 else NULL
        if cap == start:
            return 0, used, True
        with nogil:
            more = ft_ring_drain(&self.r, out, <uint32_t> (cap - start), &data[0], data.shape[0], &used,
                                 &snippet_len[start], ts_offset_ns, &n)
        return n, used, bool(more)

    def pending_bytes(self):
        """Bytes between the consumer and the producer position (0 when drained)."""
        if self.prod_map == NULL:
            return 0
        return self.r.producer_pos[0] - self.r.consumer_pos[0]

    def counters(self):
        return {"samples": self.r.samples, "discarded": self.r.discarded, "malformed": self.r.malformed,
                "snippet_bytes": self.r.snippet_bytes, "snippets_cut": self.r.snippets_cut,
                "gso_split": self.r.gso_split,
                "gso_unsplit": self.r.gso_unsplit}

    def close(self):
        if self.prod_map != NULL:
            munmap(self.prod_map, self.prod_len)
            self.prod_map = NULL
        if self.cons_map != NULL:
            munmap(self.cons_map, self.page)
            self.cons_map = NULL

    def __dealloc__(self):
        self.close()
