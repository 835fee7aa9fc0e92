"""The DPI columns of a flow-record batch, built from its DPI side records (struct ft_dpi_out, `dpi_*` fields).

Label and rule ids become text through a small vocabulary (dpi.coded.CodedText); the fixed-size C strings become
Arrow string arrays by numpy over the rows that have the field: no Python object per flow.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from . import _flowtable
from .coded import CodedText, masked, nulls, plain, validity
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # dpi.rules is imported when DPI runs (11 ms): not for a replay with DPI off
    from .rules import Vocab

# ft_dpi_out.set bits (ext/dpi/dpi_types.h)
O_SERVER_NAME, O_ALPN, O_VERSION, O_METHOD, O_PATH, O_UA = 0x001, 0x002, 0x008, 0x010, 0x020, 0x040
O_DNS_QTYPE, O_DNS_RCODE = 0x080, 0x100

TEXT_FIELDS = (  # column, ft_flowrec field, set bit
    ("server_name", "dpi_server_name", O_SERVER_NAME),
    ("alpn", "dpi_alpn", O_ALPN),
    ("app_version", "dpi_version", O_VERSION),
    ("http_method", "dpi_http_method", O_METHOD),
    ("http_path", "dpi_http_path", O_PATH),
    ("http_user_agent", "dpi_user_agent", O_UA),
)

# Low-cardinality DPI columns: worth Parquet dictionary encoding (dpi/writer.py); measured on the benchmark,
# without it the DPI columns added 0.06 s to a 0.1 s Parquet write, with it nothing measurable.
DICTIONARY_COLUMNS = {"app_proto", "app_category", "app_rule", "app_confidence", "app_payload_proto", "alpn",
                      "app_version", "http_method", "dns_qtype", "dns_rcode", "dpi_packets"}

_BUILTIN: Vocab | None = None


def _builtin() -> Vocab:
    global _BUILTIN
    if _BUILTIN is None:
        from .rules import Vocab
        _BUILTIN = Vocab.builtin()
    return _BUILTIN


class _Tables:
    """Vocabularies, cached per Vocab."""

    def __init__(self, v: Vocab):
        from .rules import CONFIDENCE
        self.labels = CodedText([x or None for x in v.labels])
        cats = [None] + sorted({c for c in list(v.label_categories) + list(v.rule_categories) if c})
        index = {c: i for i, c in enumerate(cats)}
        self.categories = CodedText(cats)
        self.label_cat = np.array([index[c] if c else 0 for c in v.label_categories] or [0], np.int32)
        self.rule_cat = np.array([index[c] for c in v.rule_categories] or [0], np.int32)
        self.rules = CodedText(list(v.rule_names()))
        self.conf = CodedText([x or None for x in CONFIDENCE])


_cache: dict[int, tuple[Vocab, _Tables]] = {}


def _tables(v: Vocab) -> _Tables:
    hit = _cache.get(id(v))
    if hit is None or hit[0] is not v:
        hit = (v, _Tables(v))
        _cache[id(v)] = hit
    return hit[1]


def _take(table: CodedText, ids: np.ndarray) -> pa.Array:
    """table[ids], null where the id is 0 or outside the table."""
    return table(ids, ids > 0)


def _text(raw: np.ndarray, offset: int, width: int, valid: np.ndarray) -> pa.Array:
    """A string column from a fixed-width NUL-terminated char field of each row (null where not valid)."""
    n = raw.shape[0]
    lens = np.zeros(n, np.int32)
    idx = np.flatnonzero(valid)
    data = np.zeros(0, np.uint8)
    if len(idx):
        sub = raw[idx, offset:offset + width]
        nz = sub != 0
        ln = np.where(nz.all(axis=1), width, nz.argmin(axis=1)).astype(np.int32)
        lens[idx] = ln
        data = sub[np.arange(width)[None, :] < ln[:, None]]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lens, out=offsets[1:])
    bitmap, nulls = validity(valid)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()), bitmap, nulls)


def build(recs: np.ndarray, dpi_recs: np.ndarray | None, vocab: Vocab | None = None,
          group: bool = True) -> dict[str, pa.Array]:
    """The DPI columns of a batch of _flowtable.FLOWREC_DTYPE records, by column name: app_proto (a "core"
    column), and with group the "dpi" group's columns (dpi.schema). dpi_recs: the batch's DPI side records
    (_flowtable.DPI_OUT_DTYPE, FlowTable.taken_dpi), one per record in record order while DPI is on; None or
    empty when DPI is off (app_proto is then null)."""
    n = len(recs)
    if dpi_recs is None or (len(dpi_recs) == 0 and n > 0):
        if group:
            raise ValueError("DPI columns asked for without DPI side records")
        return {"app_proto": nulls(pa.string(), n)}
    if len(dpi_recs) != n:   # an empty batch has none
        raise ValueError(f"{len(dpi_recs)} DPI side records for {n} flow records")
    v = vocab or _builtin()
    t = _tables(v)
    d = dpi_recs
    app = d["dpi_app"]
    labelled = app != 0
    if not group:
        return {"app_proto": _take(t.labels, np.where(labelled, app, 0))}
    base = d["dpi_base"]
    rule = d["dpi_rule"]
    conf = d["dpi_conf"]
    setb = d["dpi_set"]
    # category: the deciding rule's, else the label's default
    rid = rule.astype(np.int64) - _flowtable.DPI_RULE_BASE
    by_rule = (rid >= 0) & (rid < len(v.rule_ids))
    label_cat = t.label_cat[np.clip(app, 0, len(t.label_cat) - 1)]
    cat_ids = np.where(by_rule, t.rule_cat[np.clip(rid, 0, len(t.rule_cat) - 1)], label_cat)
    cats = _take(t.categories, np.where(labelled, cat_ids, 0))
    cols = {
        "app_proto": _take(t.labels, np.where(labelled, app, 0)),
        "app_category": cats,
        "app_rule": _take(t.rules, np.where(labelled, rule, 0)),
        "app_confidence": _take(t.conf, np.where(labelled, conf, 0)),
        "app_payload_proto": _take(t.labels, base),
    }
    if d.dtype.itemsize == _flowtable.DPI_OUT_DTYPE.itemsize and d.flags.c_contiguous:
        # one C pass per field (the usual case: records straight from FlowTable.take())
        for (col, _f, _b), (offsets, data, valid) in zip(TEXT_FIELDS, _flowtable.dpi_text_columns(d)):
            bitmap, n_null = validity(valid)
            cols[col] = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, n_null)
    else:  # a repacked copy (numpy concatenate and friends): numpy over the fields' bytes
        raw = d.view(np.uint8).reshape(n, d.dtype.itemsize) if n else np.zeros((0, d.dtype.itemsize), np.uint8)
        fields = d.dtype.fields
        for col, fname, bit in TEXT_FIELDS:
            ftype, off = fields[fname][:2]
            cols[col] = _text(raw, off, ftype.itemsize, (setb & bit) != 0)
    cols["dns_qtype"] = masked(d["dpi_dns_qtype"], (setb & O_DNS_QTYPE) != 0, pa.uint16())
    cols["dns_rcode"] = masked(d["dpi_dns_rcode"], (setb & O_DNS_RCODE) != 0, pa.uint8())
    cols["dpi_packets"] = plain(d["dpi_inspected"], pa.uint8())
    return cols
