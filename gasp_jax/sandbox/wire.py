"""Wire format between the trusted parent and a sandbox worker.

Stdlib only: its source is also loaded into the worker interpreter (as
``gasp_sandbox_worker.wire``, see ``pool.WORKER_BOOT``), which must not import the ``gasp_jax``
package (its ``__init__`` may pull in JAX).

A frame is ``<u32 header length><u32 blob bytes>`` + a JSON header + raw blobs. The header
holds only metadata; every piece of user data (program text, test inputs, program output)
travels as a raw blob, so the worker never has to decode, copy or pickle it, and the parent
never unpickles anything that came from the worker.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any, Sequence

PREFIX = struct.Struct("<II")
MAX_HEADER = 1 << 20


class ProtocolError(RuntimeError):
    """The byte stream from the other side is malformed, truncated or late."""


def encode_frame(header: dict[str, Any], blobs: Sequence[bytes | bytearray | memoryview] = ()) -> list:
    """Return the frame as a list of buffers suitable for ``os.writev``."""
    sizes = [len(b) if not isinstance(b, memoryview) else b.nbytes for b in blobs]
    head = dict(header)
    head["b"] = sizes
    raw = json.dumps(head, separators=(",", ":")).encode()
    return [PREFIX.pack(len(raw), sum(sizes)), raw, *blobs]


_FLAT = {None: "null", True: "true", False: "false"}


def encode_flat_frame(header: dict[str, Any], blobs: Sequence[bytes | bytearray | memoryview] = ()) -> list:
    """``encode_frame`` for a header of scalars (None, bool, int, finite float, plain str keys and
    values), built with one %-format instead of ``json.dumps``; the bytes decode to the same JSON.

    The sandbox's runner calls this once per test right after forking the test child: every
    object ``json.dumps`` allocates then lands on a copy-on-write page shared with that child,
    and this path writes to ~50 fewer of them. Anything else falls back to ``encode_frame``."""
    parts = []
    for k, v in header.items():
        t = type(v)
        if v is None or t is bool:
            parts.append('"%s":%s' % (k, _FLAT[v]))
        elif t is int:
            parts.append('"%s":%d' % (k, v))
        elif t is float and v - v == 0.0:  # finite
            parts.append('"%s":%r' % (k, v))
        elif t is str and v.isidentifier() and v.isascii():
            parts.append('"%s":"%s"' % (k, v))
        else:
            return encode_frame(header, blobs)
        if type(k) is not str or not (k.isidentifier() and k.isascii()):
            return encode_frame(header, blobs)
    sizes = [b.nbytes if type(b) is memoryview else len(b) for b in blobs]
    raw = ("{%s,\"b\":[%s]}" % (",".join(parts), ",".join(["%d" % n for n in sizes]))).encode()
    return [PREFIX.pack(len(raw), sum(sizes)), raw, *blobs]


def write_all(fd: int, buffers: list) -> None:
    """Write every buffer completely (pipes may accept partial writes)."""
    n = 0
    if len(buffers) <= 64:  # the common case: one writev takes the whole (small) frame
        total = 0
        for b in buffers:
            total += b.nbytes if type(b) is memoryview else len(b)
        if not total:
            return
        n = os.writev(fd, buffers)
        if n == total:
            return
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    while True:
        while n and views:  # drop what the last writev took
            head = views[0]
            if n >= head.nbytes:
                n -= head.nbytes
                views.pop(0)
            else:
                views[0] = head[n:]
                n = 0
        if not views:
            return
        n = os.writev(fd, views[:64])


def send_frame(fd: int, header: dict[str, Any], blobs: Sequence = ()) -> None:
    write_all(fd, encode_frame(header, blobs))


def wait_fd(fd: int, events: int, timeout_s: float) -> bool:
    """poll(2) one fd (unlike select, works for fd numbers above 1024, which a big trainer
    process may well hand out). True when ready (or hung up / in error)."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0, int(timeout_s * 1000) + 1)))


def read_exact(fd: int, n: int, deadline: float | None = None, into: memoryview | None = None) -> bytes | memoryview:
    """Read exactly ``n`` bytes (into ``into`` if given), honouring an absolute monotonic deadline."""
    buf = into if into is not None else memoryview(bytearray(n))
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("timed out waiting for the worker")
            if not wait_fd(fd, select.POLLIN, left):
                raise ProtocolError("timed out waiting for the worker")
        k = os.readv(fd, [buf[got:n]])
        if k == 0:
            raise ProtocolError("unexpected end of stream")
        got += k
    return buf if into is not None else bytes(buf)


def read_frame(fd: int, deadline: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """Read one frame; blobs are returned as ``bytes`` (parent side)."""
    hlen, total = PREFIX.unpack(read_exact(fd, PREFIX.size, deadline))
    if hlen > MAX_HEADER:
        raise ProtocolError(f"frame header too large ({hlen} bytes)")
    try:
        header = json.loads(read_exact(fd, hlen, deadline))
        sizes = [int(s) for s in header["b"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed frame header: {exc}") from None
    if sum(sizes) != total or any(s < 0 for s in sizes):
        raise ProtocolError("frame blob sizes do not add up")
    body = read_exact(fd, total, deadline) if total else b""
    blobs, off = [], 0
    for s in sizes:
        blobs.append(body[off:off + s])
        off += s
    return header, blobs


class FrameReader:
    """Buffered frame reader for the parent side: one ``poll`` and one ``read`` usually bring a
    whole frame (or several), where reading prefix, header and blobs separately costs a poll
    and a read each. Honours an absolute monotonic deadline like ``read_frame``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.poller = select.poll()  # not select(): fd numbers above 1024 are fine
        self.poller.register(fd, select.POLLIN)

    def _fill(self, n: int, deadline: float | None) -> None:
        while len(self.buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self.poller.poll(max(0, int(left * 1000) + 1)):
                    raise ProtocolError("timed out waiting for the worker")
            chunk = os.read(self.fd, max(1 << 16, n - len(self.buf)))
            if not chunk:
                raise ProtocolError("unexpected end of stream")
            self.buf += chunk

    def read_frame(self, deadline: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Read one frame; blobs are returned as ``bytes``."""
        self._fill(PREFIX.size, deadline)
        hlen, total = PREFIX.unpack_from(self.buf)
        if hlen > MAX_HEADER:
            raise ProtocolError(f"frame header too large ({hlen} bytes)")
        start = PREFIX.size + hlen
        self._fill(start, deadline)
        try:
            header = json.loads(bytes(self.buf[PREFIX.size:start]))
            sizes = [int(s) for s in header["b"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"malformed frame header: {exc}") from None
        if sum(sizes) != total or any(s < 0 for s in sizes):
            raise ProtocolError("frame blob sizes do not add up")
        self._fill(start + total, deadline)
        blobs, off = [], start
        for size in sizes:
            blobs.append(bytes(self.buf[off:off + size]))
            off += size
        del self.buf[:start + total]
        return header, blobs

