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
                unsigned long long ts_ns=0):
    """Parse one frame; return its record as a numpy structured scalar of PKT_DTYPE.

    For tests and tools (one Python object per call): the replay path never calls this.
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
    ft_parse(base, base + n, linktype, p)
    return out[0]
