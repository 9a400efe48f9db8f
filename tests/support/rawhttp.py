"""A raw HTTP/1.1 client for bodies no ordinary client should send: huge, chunked, and
abandoned as soon as the server answers (as an attacker's client would not bother to do,
but a test must, or it would spend minutes pushing bytes the server has refused)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = ["RawReply", "post_large", "raw_request"]

_CHUNK = b"7" * 65_536


@dataclass(frozen=True)
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes written before the server answered or hung up


async def post_large(port: int, path: str, size: int, *, chunked: bool,
                     headers: dict[str, str] | None = None) -> RawReply:
    """POST ``size`` bytes to ``path``, stopping as soon as a response arrives."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    sent = 0
    try:
        while sent < size and not answer.done():
            piece = _CHUNK[: size - sent]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            sent += len(piece)
        if chunked and not answer.done():
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # the server hung up on us: its answer is already in the read buffer
    try:
        raw_head = await asyncio.wait_for(answer, 60)
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        found = {k.strip().lower(): v.strip() for k, _, v in
                 (line.partition(":") for line in lines if line)}
        body = await asyncio.wait_for(
            reader.readexactly(int(found.get("content-length", "0"))), 30)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return RawReply(int(status_line.split()[1]), found, body, sent)


async def raw_request(port: int, method: str, path: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> RawReply:
    """One request with headers exactly as given (blank or repeated ones included)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    try:
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {k.strip().lower(): v.strip() for k, _, v in
             (line.partition(":") for line in header_lines if line)}
    return RawReply(int(status_line.split()[1]), found, rest, len(body))
