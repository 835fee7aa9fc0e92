"""Read a flow-record file and describe it: format, schema, metadata, rows, run counters, top flows."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class InspectError(Exception):
    """The file is not a readable flow file (message names the file)."""


def sniff_format(path: str) -> str:
    """parquet, ipc_file or ipc_stream, from the file's first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:6] == b"ARROW1":
        return "ipc_file"
    if head[:4] == b"\xff\xff\xff\xff" or len(head) >= 4:
        return "ipc_stream"
    raise InspectError(f"{path}: empty or too short to be a flow file")


def _read(path: str, fmt: str) -> tuple[pa.Table, dict, int]:
    """(table, final counters or {}, batches / row groups)."""
    counters = {}
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        md = pf.metadata.metadata or {}
        if b"flowtap.counters" in md:
            counters = json.loads(md[b"flowtap.counters"])
        return pf.read(), counters, pf.metadata.num_row_groups
    batches = []
    with pa.memory_map(path) as src:
        if fmt == "ipc_file":
            r = pa.ipc.open_file(src)
            for i in range(r.num_record_batches):
                b, meta = r.get_batch_with_custom_metadata(i)
                batches.append(b)
                if meta is not None and b"flowtap.counters" in meta:
                    counters = json.loads(meta[b"flowtap.counters"])
            schema = r.schema
        else:
            r = pa.ipc.open_stream(src)
            for b, meta in r.iter_batches_with_custom_metadata():
                batches.append(b)
                if meta is not None and b"flowtap.counters" in meta:
                    counters = json.loads(meta[b"flowtap.counters"])
            schema = r.schema
    return pa.Table.from_batches(batches, schema=schema), counters, len(batches)


def inspect_file(path: str, top: int = 10) -> dict:
    fmt = sniff_format(path)
    try:
        table, counters, chunks = _read(path, fmt)
    except (pa.ArrowInvalid, OSError) as e:
        raise InspectError(f"{path}: not a readable {fmt.replace('_', ' ')}: {e}") from None
    md = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    info = {
        "path": path,
        "format": fmt,
        "size_bytes": os.path.getsize(path),
        "rows": table.num_rows,
        "chunks": chunks,
        "schema": [(f.name, str(f.type), f.nullable) for f in table.schema],
        "metadata": md,
        "counters": counters,
        "top_flows": [],
    }
    needed = {"src_ip", "dst_ip", "src_port", "dst_port", "protocol", "src_bytes", "dst_bytes",
              "src_packets", "dst_packets", "flow_id"}
    if table.num_rows and needed <= set(table.column_names) and top > 0:
        tot = pc.add(table["src_bytes"], table["dst_bytes"])
        t = table.select(sorted(needed)).append_column("bytes", tot)
        t = t.sort_by([("bytes", "descending"), ("flow_id", "ascending")]).slice(0, top)
        info["top_flows"] = t.to_pylist()
        info["total_bytes"] = pc.sum(tot).as_py()
        info["total_packets"] = pc.sum(pc.add(table["src_packets"], table["dst_packets"])).as_py()
    return info


def format_info(info: dict) -> str:
    from .replay import PROTO_NAMES, endpoint

    fmt_name = {"parquet": "Parquet", "ipc_file": "Arrow IPC file", "ipc_stream": "Arrow IPC stream"}
    md = info["metadata"]
    lines = [
        f"{info['path']}: {fmt_name[info['format']]}, {info['size_bytes']:,} bytes, {info['rows']:,} rows "
        f"in {info['chunks']} {'row groups' if info['format'] == 'parquet' else 'batches'}",
    ]
    if "flowtap.version" in md:
        lines.append(f"written by flowtap {md['flowtap.version']} (schema {md.get('flowtap.schema_version')}) "
                     f"on {md.get('flowtap.observer_host', '?')}")
    if "flowtap.capture_source" in md:
        lines.append("source: " + ", ".join(json.loads(md["flowtap.capture_source"])))
    if "flowtap.settings" in md:
        s = json.loads(md["flowtap.settings"])
        lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    if "total_bytes" in info:
        lines.append(f"totals: {info['total_packets']:,} packets, {info['total_bytes']:,} IP bytes")
    c = info["counters"]
    if c:
        lines.append(f"run counters: {c.get('packets_seen', 0):,} packets seen, "
                     f"{c.get('packets_metered', 0):,} metered, {c.get('flows_created', 0):,} flows, "
                     f"{c.get('flows_evicted', 0):,} evicted")
        if c.get("not_metered_by_reason"):
            lines.append("  not metered: " + ", ".join(f"{k} {v:,}" for k, v in c["not_metered_by_reason"].items()))
        if c.get("capture_errors"):
            lines.append("  capture errors: " + "; ".join(c["capture_errors"]))
    lines.append("schema:")
    for name, typ, nullable in info["schema"]:
        lines.append(f"  {name:<20} {typ}{'' if nullable else ' not null'}")
    if info["top_flows"]:
        lines.append(f"top {len(info['top_flows'])} flows by bytes:")
        lines.append(f"  {'bytes':>14} {'packets':>10}  flow")
        for r in info["top_flows"]:
            lines.append(f"  {r['bytes']:>14,} {r['src_packets'] + r['dst_packets']:>10,}  "
                         f"#{r['flow_id']} {endpoint(r['src_ip'], r['src_port'])} -> "
                         f"{endpoint(r['dst_ip'], r['dst_port'])} {PROTO_NAMES.get(r['protocol'], r['protocol'])}")
    return "\n".join(lines)
