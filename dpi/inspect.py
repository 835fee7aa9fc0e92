"""Read a flow-record file and describe it: format, schema, metadata, rows, run counters, top flows."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

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


EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # IPC end-of-stream marker (continuation, length 0)


@dataclass
class StreamScan:
    """What an Arrow IPC stream (or the stream inside an IPC file, after its 8-byte magic) holds."""
    schema: pa.Schema | None
    start: int      # byte offset of the stream in the file
    end: int        # byte offset just after the last complete message (schema or batch)
    size: int       # file size
    batches: int    # complete record-batch messages
    eos: bool       # the end-of-stream marker follows them: the writer closed the stream
    error: str      # why reading stopped, when an incomplete message follows ("" otherwise)


def scan_stream(buf: pa.Buffer, start: int = 0) -> StreamScan:
    """Walk the messages one by one, without decoding them: the byte offset where the complete ones end,
    their number, and whether the end-of-stream marker closes them."""
    if buf.size < start:
        return StreamScan(None, start, start, buf.size, 0, False, f"only {buf.size} bytes")
    src = pa.BufferReader(buf.slice(start))
    mr = pa.ipc.MessageReader.open_stream(src)
    schema, end, batches, error = None, start, 0, ""
    while True:
        try:
            m = mr.read_next_message()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as e:
            error = str(e)
            break
        if m.type == "schema":
            schema = pa.ipc.read_schema(m)
        elif m.type == "record batch":
            batches += 1
        end = start + src.tell()
    eos = bytes(buf[end:end + 8]) == EOS
    return StreamScan(schema, start, end, buf.size, batches, eos, error)


def _stream_batches(buf: pa.Buffer, scan: StreamScan):
    """(batch, counters or None) of the complete messages only."""
    r = pa.ipc.open_stream(buf.slice(scan.start, scan.end - scan.start))
    for b, meta in r.iter_batches_with_custom_metadata():
        c = json.loads(meta[b"flowtap.counters"]) if meta is not None and b"flowtap.counters" in meta else None
        yield b, c


def _state(scan: StreamScan | None) -> dict:
    if scan is None:
        return {"complete": True}
    return {"complete": scan.eos, "truncated_at": None if scan.eos else scan.end, "batches": scan.batches,
            "bytes_after": scan.size - scan.end - (8 if scan.eos else 0), "detail": scan.error}


def _read(path: str, fmt: str) -> tuple[pa.Table, dict, int, dict]:
    """(table, final counters or {}, batches / row groups, state). A stream or IPC file cut short gives its
    complete batches, and a state that says where it was cut."""
    counters = {}
    if fmt == "parquet":
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4))
            if size < 12 or f.read(4) != b"PAR1":
                raise InspectError(f"{path}: Parquet file without its footer (a run killed while writing "
                                   "Parquet directly, --no-parquet-journal): nothing in it can be read")
        pf = pq.ParquetFile(path)
        md = pf.metadata.metadata or {}
        if b"flowtap.counters" in md:
            counters = json.loads(md[b"flowtap.counters"])
        return pf.read(), counters, pf.metadata.num_row_groups, _state(None)
    batches = []
    with pa.memory_map(path) as src:
        buf = src.read_buffer()
        scan = None
        if fmt == "ipc_file":
            try:
                r = pa.ipc.open_file(buf)
            except (pa.ArrowInvalid, OSError):
                scan = scan_stream(buf, 8)   # no footer: the stream after the magic is what is there
            else:
                for i in range(r.num_record_batches):
                    b, meta = r.get_batch_with_custom_metadata(i)
                    batches.append(b)
                    if meta is not None and b"flowtap.counters" in meta:
                        counters = json.loads(meta[b"flowtap.counters"])
                schema = r.schema
        else:
            scan = scan_stream(buf, 0)
        if scan is not None:
            if scan.schema is None:
                raise InspectError(f"{path}: no complete schema message ({scan.size} bytes): nothing to read")
            for b, c in _stream_batches(buf, scan):
                batches.append(b)
                if c is not None:
                    counters = c
            schema = scan.schema
        table = pa.Table.from_batches(batches, schema=schema)
    return table, counters, len(batches), _state(scan)


def recover(path: str, output: str, fmt: str | None = None) -> dict:
    """Salvage every complete batch of a flow file (typically the temporary file of a killed run, or a
    stream cut short) into a sealed file at output (format from its extension or fmt). The counters are the
    snapshot carried by the last complete batch; flowtap.recovered in the schema metadata says where they
    came from. Raises InspectError when nothing can be salvaged."""
    from .writer import FlowWriter

    fmt_in = sniff_format(path)
    if fmt_in == "parquet":
        table, counters, _, state = _read(path, fmt_in)   # raises when footerless
        scan = None
        items = [(b, None) for b in table.to_batches()]
        schema = table.schema
        size, end = os.path.getsize(path), os.path.getsize(path)
    else:
        mm = pa.memory_map(path)
        buf = mm.read_buffer()
        scan = None
        if fmt_in == "ipc_file":
            try:
                pa.ipc.open_file(buf)
                # complete IPC file: the same stream, footer aside
            except (pa.ArrowInvalid, OSError):
                pass
            scan = scan_stream(buf, 8)
        else:
            scan = scan_stream(buf, 0)
        if scan.schema is None:
            raise InspectError(f"{path}: no complete schema message in its {scan.size} bytes: nothing to recover")
        schema, size, end = scan.schema, scan.size, scan.end
        items = _stream_batches(buf, scan)
        counters = {}
    info = {"source": os.path.abspath(path), "source_format": fmt_in, "source_bytes": size,
            "bytes_used": end, "bytes_dropped": size - end - (8 if scan is not None and scan.eos else 0),
            "source_complete": scan.eos if scan is not None else True}
    md = dict(schema.metadata or {})
    md[b"flowtap.recovered"] = json.dumps(info).encode()
    w = FlowWriter(output, schema.with_metadata(md), fmt)
    rows = batches = 0
    for b, c in items:
        if c is not None:
            counters = c
        w.write(b, c)
        rows += b.num_rows
        batches += b.num_rows > 0
    w.close(counters or None)
    if scan is not None:
        mm.close()
    return {**info, "output": output, "rows": rows, "batches": batches, "counters": counters}


def inspect_file(path: str, top: int = 10) -> dict:
    fmt = sniff_format(path)
    try:
        table, counters, chunks, state = _read(path, fmt)
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
        "state": state,
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
    st = info.get("state", {})
    if st.get("complete", True):
        if info["format"] != "parquet":
            lines.append("state: complete (" + ("end-of-stream marker" if info["format"] == "ipc_stream"
                                                 else "footer") + " present)")
    else:
        lines.append(f"state: truncated at byte {st['truncated_at']:,} after {st['batches']} batches"
                     + (f" ({st['bytes_after']:,} bytes of an incomplete message follow)" if st["bytes_after"]
                        else " (no end-of-stream marker)")
                     + f"; `flowtap inspect --recover {info['path']} -o FILE` seals them into a file")
    if "flowtap.recovered" in md:
        r = json.loads(md["flowtap.recovered"])
        lines.append(f"recovered from {r['source']} ({r['bytes_used']:,} of {r['source_bytes']:,} bytes used)")
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
        o = c.get("output") or {}
        if o.get("limit_reached"):
            lines.append(f"  output size limit reached ({o['max_bytes']:,} bytes): {o['records_not_written']:,} "
                         f"records in {o['batches_not_written']} batches not written")
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
