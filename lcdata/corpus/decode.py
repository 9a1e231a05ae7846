"""Decoding of compressed corpus files into chunks of whole lines (used by `lcdata.corpus`).

``zstd_pieces`` / ``gzip_pieces`` / ``plain_pieces`` turn a binary file object into decompressed pieces,
frame / member aware, and raise `Corrupt` on corruption *and* on truncation; ``line_chunks`` re-cuts pieces
into chunks of about ``chunk_bytes`` that end at a newline, yielding the complete lines decoded before a
break first. A ``.zst`` file of at most ``ONE_SHOT_BYTES`` holding one frame that declares its size (at
most the chunk size) is decompressed in one call. Memory: O(chunk_bytes + ONE_SHOT_BYTES) per file.

Where a stream breaks. `Corrupt.offset` is the number of compressed bytes *decoded*: the file's bytes
before it gave all the output they hold, the bytes from it on are *unread* (``file size - offset``).
Exact to what each decoder lets one know, and the output before the break is all given out:

- zstd decodes a frame block by block (a block holds at most 128 KiB of output, and a compressed block
  gives nothing until it is whole). The offset is the end of the last whole block (or whole frame) that
  decoded: the block that fails or is cut off, the checksum that does not match, a frame header that is
  bad, and everything after are unread. On the error path the broken frame is decoded again from its
  start (a seek), block by block, to give out the blocks of the failing read call that the streaming
  decoder could not return; a file that cannot seek counts its broken frame unread from its start.
- gzip (deflate) decodes as it reads. The offset is the first byte zlib rejects, found by feeding the
  failing read call's bytes again, in halves, to a copy of the decoder's state before it (a copy per
  1 MiB read; O(log) extra calls on the error path only); a file that ends inside a member was decoded
  to its end (offset = file size: what is lost was never in the file).

Corruption that the decoder does not detect (a flipped byte in a zstd frame without checksum, or data
that still inflates) cannot be found here: it shows as bad records (``malformed_json`` ...) or not at all.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Generator, Iterator

import zstandard

READ_BLOCK = 1 << 20  # compressed bytes per read() call


ONE_SHOT_BYTES = 16 << 20  # a .zst file up to this size may be decompressed in one call (see zstd_pieces)


class Corrupt(Exception):
    """A stream that cannot be decoded to its end. ``offset``: the compressed bytes decoded before the break
    (module docstring); ``row``: the first record lost, where the decoder knows it (Parquet), else None;
    ``checksum``: the break is a frame's / member's checksum that does not match (its output, given out
    before the check, may be corrupt)."""

    def __init__(self, message: str, offset: int, row: int | None = None, checksum: bool = False):
        super().__init__(message)
        self.offset, self.row, self.checksum = offset, row, checksum


def zstd_pieces(raw, path: str, max_out: int = 32 << 20, source: list | None = None) -> Iterator[bytes]:
    """Decompress a (multi-frame) zstd stream; raise on corruption *and* on truncation.

    Fast path: a file of at most ``ONE_SHOT_BYTES`` holding one frame whose header gives a content size of
    at most ``max_out`` is decompressed in one call into one exactly-sized buffer (about 1.5x faster than
    the streaming object, and it releases the GIL, so threads scale). Anything else (several frames,
    unknown size, or an error, which the streaming path then locates) goes through the streaming decoder.
    ``source``: a list that receives the file object the streaming decoder reads from (its ``tell()`` is the
    compressed bytes consumed, whatever was read ahead: what progress shows).
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
    if source is not None:
        source.append(raw)
    yield from _frames(raw, dctx.decompressobj, zstandard.ZstdError, "zstd", "frame")


class _Prefixed:
    """A file object reading ``head`` first, then the rest of ``raw`` (which stands at ``len(head)``)."""

    def __init__(self, head: bytes, raw):
        self.head, self.pos, self.raw = head, 0, raw

    def read(self, n: int) -> bytes:
        if self.pos < len(self.head):
            out = self.head[self.pos: self.pos + n]
            self.pos += len(out)
            return out
        return self.raw.read(n)

    def tell(self) -> int:
        return self.pos if self.pos < len(self.head) else self.raw.tell()

    def seek(self, offset: int) -> None:
        self.pos = min(offset, len(self.head))
        self.raw.seek(max(offset, len(self.head)))


def gzip_pieces(raw, path: str) -> Iterator[bytes]:
    """Decompress a (multi-member) gzip stream; raise on corruption *and* on truncation.

    Output is yielded as it is decoded, so the records before a break are not lost. Zero padding between
    or after members is ignored, as by `gzip.GzipFile`.
    """
    yield from _frames(raw, lambda: zlib.decompressobj(wbits=31), zlib.error, "gzip", "member", skip_zeros=True)


def _frames(raw, new, errors, codec: str, unit: str, skip_zeros: bool = False) -> Iterator[bytes]:
    """Decode the concatenated frames / members of ``raw`` with decoders from ``new()``; raise `Corrupt` on a
    decoder error and when the stream ends inside a frame, after giving out the output before the break
    (module docstring). ``skip_zeros``: zero padding between frames."""
    dobj, inside = new(), False
    pos = start = done = 0  # offset of `data`; of the current frame; output bytes of the frame given out
    while data := raw.read(READ_BLOCK):
        while data:
            if not inside:
                if skip_zeros:
                    n = len(data)
                    data = data.lstrip(b"\0")
                    pos += n - len(data)
                    if not data:
                        break
                start, done = pos, 0
            before = dobj.copy() if codec == "gzip" else None  # the state to locate an error from
            try:
                out = dobj.decompress(data)
            except errors as e:
                if codec == "gzip":
                    offset = yield from _inflate_break(before, data, pos, errors)
                    checksum = "incorrect data check" in str(e) or "incorrect length check" in str(e)
                else:
                    offset, checksum = yield from _zstd_break(raw, start, done)
                raise Corrupt(f"{codec}: {e}", offset, checksum=checksum) from None
            inside = True
            if out:
                done += len(out)
                yield out
            if dobj.eof:
                pos += len(data) - len(dobj.unused_data)
                data, dobj, inside = dobj.unused_data, new(), False
            else:
                pos += len(data)
                data = b""
    if inside:
        offset = pos if codec == "gzip" else (yield from _zstd_break(raw, start, done))[0]
        raise Corrupt(f"{codec} stream ends inside a {unit} (file truncated)", offset)


def _inflate_break(before, data: bytes, pos: int, errors) -> Generator[bytes, None, int]:
    """``data`` (at offset ``pos``) made the zlib decoder whose prior state is ``before`` fail: feed it again
    to copies of that state, half by half, keeping each part that decodes. Yields the output of the longest
    prefix of ``data`` that zlib accepts; returns the offset of the first byte it rejects."""
    lo, hi = 0, len(data)  # data[:lo] is accepted (and fed to `before`), data[:hi] is not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        d = before.copy()
        try:
            out = d.decompress(data[lo:mid])
        except errors:
            hi = mid
            continue
        if out:
            yield out
        before, lo = d, mid
    return pos + lo


def _zstd_break(raw, start: int, done: int) -> Generator[bytes, None, tuple[int, bool]]:
    """Decode the zstd frame at offset ``start`` of ``raw`` again, block by block, up to the first block that
    fails or is cut off. Yields its output past the first ``done`` bytes (given out already); returns the
    end offset of the last whole block decoded (``start`` if none, or if ``raw`` cannot seek), and whether
    the break is the frame's checksum."""
    try:
        raw.seek(start)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return start, False
    head = _read_exact(raw, 18)  # the longest frame header
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        n = zstandard.frame_header_size(head)
        checksum = zstandard.get_frame_parameters(head).has_checksum
        dobj.decompress(head[:n])
    except zstandard.ZstdError:
        return start, False
    raw.seek(start + n)
    good, pos, out_n = start, start + n, 0
    while True:
        header = _read_exact(raw, 3)
        if len(header) < 3:
            return good, False
        v = int.from_bytes(header, "little")
        last, size = v & 1, 1 if (v >> 1) & 3 == 1 else v >> 3  # an RLE block holds one byte
        body = _read_exact(raw, size)
        if len(body) < size:
            return good, False
        try:
            out = dobj.decompress(header + body)
        except zstandard.ZstdError:
            return good, False
        if out_n + len(out) > done:
            yield out[max(0, done - out_n):]
        out_n += len(out)
        pos += 3 + size
        good = pos
        if last:
            if checksum:
                try:
                    dobj.decompress(_read_exact(raw, 4))
                except zstandard.ZstdError:
                    return good, True
                pos += 4
            return (pos, False) if dobj.eof else (good, False)


def _read_exact(raw, n: int) -> bytes:
    """``n`` bytes of ``raw`` (fewer only at its end: one read() may return less)."""
    parts, got = [], 0
    while got < n and (b := raw.read(n - got)):
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def plain_pieces(raw, path: str) -> Iterator[bytes]:
    while data := raw.read(4 * READ_BLOCK):
        yield data


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
