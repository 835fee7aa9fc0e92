"""Capture files in, packet-record batches out: the Python face of the pcap/pcapng reader (ext/ft_reader.c).

    from dpi.capture import iter_captures, CaptureError
    for batch in iter_captures(["a.pcap", "b.pcapng.zst"]):
        batch.pkts      # numpy array of dpi._reader.PKT_DTYPE (valid until the next batch)
        batch.data      # uint8 array the records' frame_off index into
        batch.file_index, batch.reader.bytes_consumed, batch.reader.total_bytes
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Union


class CaptureError(Exception):
    """A capture file that cannot be read further: ``path``, ``offset`` (byte offset in the decompressed
    stream of the record or block at fault), ``message``. str() is ``"FILE: offset N: message"``."""

    def __init__(self, path, offset: int, message: str):
        super().__init__(path, offset, message)
        self.path = os.fspath(path) if not isinstance(path, int) else str(path)
        self.offset = int(offset)
        self.message = message

    def __str__(self) -> str:
        # the reader's messages often name the offset themselves ("pcap record at offset N: ..."): say it once
        body = self.message.replace(f" at offset {self.offset}:", ":", 1)
        return f"{self.path}: offset {self.offset}: {body}"


# imported after CaptureError: the extension looks CaptureError up in this module when it raises
from dpi._reader import CaptureReader, PKT_DTYPE  # noqa: E402


class CaptureBatch(NamedTuple):
    file_index: int  # position of the file in the paths given to iter_captures
    reader: CaptureReader  # for progress (bytes_consumed, total_bytes) and counters
    pkts: object  # numpy array of PKT_DTYPE
    data: object  # uint8 array; frame i is data[frame_off[i] : frame_off[i] + cap_len[i]]


def iter_captures(paths: Iterable[Union[str, os.PathLike]], batch_size: int = 8192,
                  on_error: Optional[Callable[[int, CaptureError], None]] = None) -> Iterator[CaptureBatch]:
    """Read the files in order, yielding their batches. A CaptureError ends the chain (raised after the
    file's good batches), unless ``on_error(file_index, error)`` is given: it is called and the next file
    follows. Each file's reader is closed before the next one opens."""
    for index, path in enumerate(paths):
        with CaptureReader(path, batch_size) as reader:
            try:
                for pkts, data in reader:
                    yield CaptureBatch(index, reader, pkts, data)
            except CaptureError as e:
                if on_error is None:
                    raise
                on_error(index, e)


__all__ = ["CaptureError", "CaptureReader", "CaptureBatch", "iter_captures", "PKT_DTYPE"]
