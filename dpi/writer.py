"""Flow-record writers: Parquet, Arrow IPC file and Arrow IPC stream, chosen by the file name's extension.

File lifecycle (docs/output.md): a file is written under a temporary name in the target directory,
``.NAME.partial-PID``, and renamed into place when sealed, so a file under its final name is always complete.
Every batch is handed to the kernel (write(2)) before write() returns, so a killed process leaves every
complete batch in the temporary file, which `flowtap inspect --recover` salvages:

- IPC stream (.arrows): the temporary file is the stream; sealing appends the end-of-stream marker.
- IPC file (.arrow): the temporary file is the magic, then a stream; sealing appends the footer.
- Parquet: a Parquet file without its footer cannot be read at all, so by default (journal=True) the batches
  go to the temporary file as an Arrow IPC stream (the journal) and sealing converts it to Parquet, batch by
  batch (each batch one row group, as when writing Parquet directly), under ``.NAME.sealing-PID``, then
  renames it and removes the journal. journal=False writes Parquet directly: a little faster, but a killed run
  leaves nothing readable.

Run counters go into the Parquet file metadata at close, and into the custom metadata of every IPC record
batch (a snapshot at that batch; the last one is final).

When a write fails (a full disk: ENOSPC, EDQUOT, EFBIG), the temporary file is cut back to its last complete
batch and kept; OutputError names the file, the errno text and the kept file. With max_bytes, batches stop
being written once the file holds max_bytes (the batch that crosses the limit is written whole: the file
exceeds the limit by less than one batch and the seal); later batches are counted, not written
(status(): limit_reached, records_not_written), and the file is sealed as usual.
"""
from __future__ import annotations

import errno as errno_mod
import json
import os
import sys

import pyarrow as pa

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc_file",
    ".feather": "ipc_file",
    ".arrows": "ipc_stream",
}


# Parquet columns worth dictionary-encoding (few distinct values)
DICTIONARY_COLUMNS = {"observer_host", "tunnel_type", "app_proto"}
# ---- DPI (issue 5): the low-cardinality DPI columns ----
from .dpi_columns import DICTIONARY_COLUMNS as _DPI_DICTIONARY_COLUMNS  # noqa: E402
DICTIONARY_COLUMNS |= _DPI_DICTIONARY_COLUMNS

# Compression of the Parquet journal (an IPC stream that lives only until sealing). Uncompressed, the journal
# cost ~3 % of a replay's CPU on big.pcap but takes ~1.2 kB a record on disk until sealing (20x the Parquet
# file); lz4 took 2.3x the Parquet file but ~11 % more CPU, zstd ~15 % (docs/output.md has the runs).
JOURNAL_COMPRESSION = None
# errnos that mean "the file system cannot take more", told apart from other output errors by the CLI
FULL_ERRNOS = {28, 122, 27}  # ENOSPC, EDQUOT, EFBIG (Linux numbers; os.strerror gives the text)


class OutputError(Exception):
    """The output cannot be created or written (message names the path). errno: the OS error number when
    one caused it; kept: the temporary file left with the complete batches (recoverable), or None."""

    def __init__(self, message: str, errno: int | None = None, kept: str | None = None):
        super().__init__(message)
        self.errno = errno
        self.kept = kept

    @property
    def disk_full(self) -> bool:
        return self.errno in FULL_ERRNOS


def format_for(path: str, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise OutputError(f"{path}: unknown format {fmt!r} (parquet, ipc_file, ipc_stream)")
        return fmt
    if path == "-":
        return "ipc_stream"
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise OutputError(f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; use "
                          ".parquet, .arrow (IPC file) or .arrows (IPC stream)")
    return FORMATS[ext]


def parse_size(text: str) -> int:
    """'100M' -> 100_000_000; K, M, G, T are powers of 1000, Ki, Mi, Gi, Ti powers of 1024; a plain number
    is bytes. Raises ValueError."""
    s = text.strip().upper().removesuffix("B")
    mult = 1
    for suffix, m in (("KI", 1 << 10), ("MI", 1 << 20), ("GI", 1 << 30), ("TI", 1 << 40),
                      ("K", 10 ** 3), ("M", 10 ** 6), ("G", 10 ** 9), ("T", 10 ** 12)):
        if s.endswith(suffix):
            s, mult = s[: -len(suffix)], m
            break
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 500K, 100M, 2G, 1GiB)") from None
    if not v > 0:
        raise ValueError(f"{text!r}: the size must be positive")
    return int(v * mult)


def _errno_text(e: BaseException) -> tuple[int | None, str]:
    code = getattr(e, "errno", None)
    if isinstance(code, int) and code > 0:
        return code, os.strerror(code)
    return None, str(e)


class FlowWriter:
    """Writes record batches of one schema to path; close() seals the file and renames it into place."""

    def __init__(self, path: str, schema: pa.Schema, fmt: str | None = None, compression: str = "zstd",
                 journal: bool = True, max_bytes: int | None = None):
        self.path = path
        self.format = format_for(path, fmt)
        self.schema = schema
        self.compression = compression
        self.journal = journal and self.format == "parquet" and path != "-"
        self.max_bytes = max_bytes
        self.rows = 0
        self.batches = 0
        self.limit_reached = False
        self.rows_not_written = 0
        self.batches_not_written = 0
        self.bytes_written = 0   # bytes of complete content (header + complete batches) in the file
        self._failed: OutputError | None = None
        self._closed = False
        if path == "-":
            self.tmp = None
            self._sink = pa.PythonFile(sys.stdout.buffer, mode="w")
        else:
            d = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(d):
                raise OutputError(f"{path}: directory {d} does not exist")
            if os.path.isdir(path):
                raise OutputError(f"{path}: is a directory")
            self.tmp = os.path.join(d, f".{os.path.basename(path)}.partial-{os.getpid()}")
            try:
                self._sink = pa.OSFile(self.tmp, "wb")
            except OSError as e:
                raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
        try:
            if self.format == "parquet" and not self.journal:
                self._w = self._parquet_writer(self._sink)
            else:
                comp = JOURNAL_COMPRESSION if self.journal else compression
                opts = pa.ipc.IpcWriteOptions(compression=comp)
                new = pa.ipc.new_file if self.format == "ipc_file" else pa.ipc.new_stream
                self._w = new(self._sink, schema, options=opts)
            self.bytes_written = self._sink.tell()
        except (OSError, pa.ArrowException) as e:
            self._discard()
            code, text = _errno_text(e)
            raise OutputError(f"{path}: cannot write: {text}", errno=code) from None

    def _parquet_writer(self, sink):
        import pyarrow.parquet as pq  # only when writing Parquet: it costs 20 ms to import
        # Dictionary encoding only where values repeat: tried on every column (the default) it cost
        # 12 % more write time and a 17 % larger file on the benchmark, falling back on the
        # high-cardinality columns (addresses, ids, timestamps).
        low_card = [f.name for f in self.schema if f.name in DICTIONARY_COLUMNS]
        return pq.ParquetWriter(sink, self.schema, compression=self.compression, use_dictionary=low_card)

    def status(self) -> dict:
        """The output counters that go into the run counters ("output")."""
        return {"max_bytes": self.max_bytes, "limit_reached": self.limit_reached,
                "records_not_written": self.rows_not_written, "batches_not_written": self.batches_not_written,
                "records_written": self.rows, "bytes_written": self.bytes_written}

    def write(self, batch: pa.RecordBatch, counters: dict | None = None) -> None:
        """Write one batch. Empty batches are skipped, except in IPC when they carry counters."""
        if self._failed is not None:
            raise self._failed
        direct_parquet = self.format == "parquet" and not self.journal
        if batch.num_rows == 0 and (direct_parquet or counters is None):
            return
        if self.max_bytes is not None and self.bytes_written >= self.max_bytes:
            self.limit_reached = True
            self.rows_not_written += batch.num_rows
            self.batches_not_written += batch.num_rows > 0
            return
        self._write(batch, counters)

    def _write(self, batch: pa.RecordBatch, counters: dict | None) -> None:
        if counters is not None and self.max_bytes is not None:
            counters["output"] = self.status()
        try:
            if self.format == "parquet" and not self.journal:
                self._w.write_batch(batch)
            else:
                meta = {"flowtap.counters": json.dumps(counters)} if counters is not None else None
                self._w.write_batch(batch, custom_metadata=meta)
            self.bytes_written = self._sink.tell()
        except (OSError, pa.ArrowException) as e:
            self._fail(e, "write")
        self.rows += batch.num_rows
        self.batches += batch.num_rows > 0

    def close(self, counters: dict | None = None) -> None:
        """Seal the file (with the final counters) and move it to its final name. After a failed write,
        nothing more is done: the temporary file keeps the complete batches."""
        if self._closed or self._failed is not None:
            return
        self._closed = True
        if counters is not None and self.max_bytes is not None:
            counters["output"] = self.status()
        try:
            if self.format != "parquet" or self.journal:
                if self.limit_reached and counters is not None:
                    # the final counters (limit reached, records not written) in a last, empty batch
                    self._write(pa.RecordBatch.from_arrays([pa.array([], f.type) for f in self.schema],
                                                           schema=self.schema), counters)
            elif counters is not None:
                self._w.add_key_value_metadata({"flowtap.counters": json.dumps(counters)})
            self._w.close()
            if self.tmp is None:
                sys.stdout.buffer.flush()
                return
            self._sink.close()
        except (OSError, pa.ArrowException) as e:
            self._fail(e, "sealing")
        if self.journal:
            self._seal_parquet(counters)
        else:
            try:
                _durable_rename(self.tmp, self.path)
            except OSError as e:   # the sync or the rename failed: the temporary file is still there
                self._fail(e, "sealing")

    def _seal_parquet(self, counters: dict | None) -> None:
        """Journal (complete IPC stream) -> Parquet under .NAME.sealing-PID -> rename; the journal goes last,
        so that at every moment one of the two holds every batch."""
        seal = os.path.join(os.path.dirname(self.tmp), f".{os.path.basename(self.path)}.sealing-{os.getpid()}")
        try:
            with pa.memory_map(self.tmp) as src:
                r = pa.ipc.open_stream(src)
                with pa.OSFile(seal, "wb") as sink:
                    w = self._parquet_writer(sink)
                    for b in r:
                        if b.num_rows:
                            w.write_batch(b)
                    if counters is not None:
                        w.add_key_value_metadata({"flowtap.counters": json.dumps(counters)})
                    w.close()
            _durable_rename(seal, self.path)
        except (OSError, pa.ArrowException) as e:
            try:
                os.unlink(seal)
            except OSError:
                pass
            code, text = _errno_text(e)
            self._failed = OutputError(
                f"{self.path}: {text} while converting to Parquet; the {self.rows:,} records are kept, complete, "
                f"in {self.tmp} (an Arrow IPC stream): `flowtap inspect --recover {self.tmp} -o FILE` "
                f"converts them", errno=code, kept=self.tmp)
            raise self._failed from None
        os.unlink(self.tmp)

    def _fail(self, e: BaseException, stage: str) -> None:
        """Cut the temporary file back to its last complete batch, keep it, raise OutputError."""
        code, text = _errno_text(e)
        where = f"{self.rows:,} records in {self.batches} batch{'' if self.batches == 1 else 'es'}"
        if self.tmp is None:
            self._failed = OutputError(f"{self.path}: {stage} failed after {where}: {text}", errno=code)
            raise self._failed from None
        try:
            self._sink.close()
        except (OSError, pa.ArrowException):
            pass
        kept = None
        if self.format == "parquet" and not self.journal:
            self._discard()   # a Parquet file without its footer cannot be read by anyone
            tail = "the partial Parquet file was removed (without its footer it is unreadable)"
        else:
            try:
                os.truncate(self.tmp, self.bytes_written)
                kept = self.tmp
                tail = (f"the {where} written are kept in {self.tmp}: "
                        f"`flowtap inspect --recover {self.tmp} -o FILE` salvages them")
            except OSError as e2:
                tail = f"the temporary file {self.tmp} could not be cut back ({e2.strerror})"
        num = f" (errno {code})" if code else ""
        self._failed = OutputError(f"{self.path}: {stage} failed: {text}{num}; {tail}", errno=code, kept=kept)
        raise self._failed from None

    def _discard(self) -> None:
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def _durable_rename(src: str, dst: str) -> None:
    """Syncs src, renames it to dst, then syncs their directory, so that after a power cut the final name
    holds either nothing or the whole sealed file. Without the file's fsync before the rename, a journaling
    file system may commit the rename before the data (a complete name on zero bytes); without the
    directory's after it, the rename itself may be lost. The file's fsync is also where a file system that
    allocates late (delayed allocation, NFS) reports a full disk: before the rename, so it is handled as any
    failed write. A failed sync of src or a failed rename raises OSError (src is still in place); a failed
    directory sync (after the rename: the file is complete under its final name) raises OutputError.
    EINVAL from the directory's fsync means the file system does not sync directories, and is not an error."""
    _fsync_path(src, 0)
    os.replace(src, dst)
    try:
        _fsync_path(os.path.dirname(os.path.abspath(dst)), os.O_DIRECTORY)
    except OSError as e:
        if e.errno == errno_mod.EINVAL:
            return
        code, text = _errno_text(e)
        raise OutputError(f"{dst}: sealed and renamed into place, but syncing its directory failed: {text}; "
                          f"after a power cut the file may be missing", errno=code) from None


def _fsync_path(path: str, flags: int) -> None:
    """fsync(2) on a path (a file's data is synced whichever descriptor asks)."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_counters(path: str) -> dict | None:
    """The final run counters stored in a flowtap output file, or None."""
    fmt = format_for(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq
        md = pq.ParquetFile(path).metadata.metadata or {}
        raw = md.get(b"flowtap.counters")
        return json.loads(raw) if raw else None
    last = None
    with open(path, "rb") as f:
        if fmt == "ipc_file":
            r = pa.ipc.open_file(f)
            for i in range(r.num_record_batches):
                _, meta = r.get_batch_with_custom_metadata(i)
                if meta and b"flowtap.counters" in meta:
                    last = meta[b"flowtap.counters"]
        else:
            r = pa.ipc.open_stream(f)
            for _, meta in r.iter_batches_with_custom_metadata():
                if meta and b"flowtap.counters" in meta:
                    last = meta[b"flowtap.counters"]
    return json.loads(last) if last else None
