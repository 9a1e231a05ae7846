"""Decoding of compressed corpus files into chunks of whole lines (used by `lcdata.corpus`).

``zstd_pieces`` / ``gzip_pieces`` / ``plain_pieces`` turn a binary file object into decompressed pieces,
frame / member aware, and raise `Corrupt` on corruption *and* on truncation; ``line_chunks`` re-cuts pieces
into chunks of about ``chunk_bytes`` that end at a newline, yielding the complete lines decoded before a
break first. A ``.zst`` file of at most ``ONE_SHOT_BYTES`` holding one frame that declares its size (at
most the chunk size) is decompressed in one call. Memory: O(chunk_bytes + ONE_SHOT_BYTES) per file.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator

import zstandard

READ_BLOCK = 1 << 20  # compressed bytes per read() call


ONE_SHOT_BYTES = 16 << 20  # a .zst file up to this size may be decompressed in one call (see zstd_pieces)


def zstd_pieces(raw, path: str, max_out: int = 32 << 20) -> Iterator[bytes]:
    """Decompress a (multi-frame) zstd stream; raise on corruption *and* on truncation.

    Fast path: a file of at most ``ONE_SHOT_BYTES`` holding one frame whose header gives a content size of
    at most ``max_out`` is decompressed in one call into one exactly-sized buffer (about 1.5x faster than
    the streaming object, and it releases the GIL, so threads scale). Anything else (several frames,
    unknown size, or an error, which the streaming path then locates) goes through the streaming decoder.
    """
    dctx = zstandard.ZstdDecompressor()
    head = raw.read(ONE_SHOT_BYTES + 1)
    if len(head) <= ONE_SHOT_BYTES:  # the whole file is in memory
        out = None
        try:
            size = zstandard.frame_content_size(head)
            if 0 < size <= max_out:  # (an empty first frame is left to the streaming path: python-zstandard
                # returns b"" for it without looking for more data)
                out = dctx.decompress(head, max_output_size=size, allow_extra_data=False)
                if len(out) != size:
                    out = None
        except zstandard.ZstdError:
            out = None
        if out is not None:
            yield out
            return
        raw = io.BytesIO(head)
    else:
        raw = _Prefixed(head, raw)
    yield from _frames(raw, dctx.decompressobj, zstandard.ZstdError, "zstd", "frame")


class _Prefixed:
    """A file object reading ``head`` first, then the rest of ``raw``."""

    def __init__(self, head: bytes, raw):
        self.head, self.pos, self.raw = head, 0, raw

    def read(self, n: int) -> bytes:
        if self.pos < len(self.head):
            out = self.head[self.pos: self.pos + n]
            self.pos += len(out)
            return out
        return self.raw.read(n)


def gzip_pieces(raw, path: str) -> Iterator[bytes]:
    """Decompress a (multi-member) gzip stream; raise on corruption *and* on truncation.

    Output is yielded as it is decoded, so the records before a break are not lost. Zero padding between
    or after members is ignored, as by `gzip.GzipFile`.
    """
    yield from _frames(raw, lambda: zlib.decompressobj(wbits=31), zlib.error, "gzip", "member", skip_zeros=True)


def _frames(raw, new, errors, codec: str, unit: str, skip_zeros: bool = False) -> Iterator[bytes]:
    """Decode the concatenated frames / members of ``raw`` with decoders from ``new()``; raise `Corrupt` on a
    decoder error and when the stream ends inside a frame. ``skip_zeros``: zero padding between frames."""
    dobj, inside = new(), False
    while data := raw.read(READ_BLOCK):
        while data:
            if skip_zeros and not inside:
                data = data.lstrip(b"\0")
                if not data:
                    break
            try:
                out = dobj.decompress(data)
            except errors as e:
                raise Corrupt(f"{codec}: {e}") from None
            inside = True
            if out:
                yield out
            if dobj.eof:
                data, dobj, inside = dobj.unused_data, new(), False
            else:
                data = b""
    if inside:
        raise Corrupt(f"{codec} stream ends inside a {unit} (file truncated)")


def plain_pieces(raw, path: str) -> Iterator[bytes]:
    while data := raw.read(4 * READ_BLOCK):
        yield data


class Corrupt(Exception):
    pass


def line_chunks(pieces: Iterator[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """Re-cut decompressed pieces into chunks that end at a newline (the last one may not).

    If the stream breaks (`Corrupt`), the complete lines decoded before the break are yielded first.
    """
    buf: list[bytes] = []
    size = 0
    try:
        for piece in pieces:
            buf.append(piece)
            size += len(piece)
            if size >= chunk_bytes:
                data = b"".join(buf)
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # one line longer than the chunk: keep accumulating
                    buf, size = [data], len(data)
                    continue
                yield data[:cut]
                rest = data[cut:]
                buf, size = ([rest], len(rest)) if rest else ([], 0)
    except Corrupt:
        data = b"".join(buf)
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        raise
    if size:
        yield b"".join(buf)
