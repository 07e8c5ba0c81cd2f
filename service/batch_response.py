"""The answer of ``POST /v1/sample``: a packed batch, streamed, holding its batch slot.

The batch is never joined into one body: `replay.remote.protocol.pack` gives its buffers
(the stored frames as read, the step arrays), and `BatchResponse` sends them in
chunks of at most `CHUNK` bytes, dropping each buffer once sent, so a batch costs
little more than its own bytes while it is read and sent. Each chunk waits for the
client to take the previous ones (uvicorn's write flow control), and the slot is
given back only after the last chunk has left and the socket's buffer drained
below its high-water mark (the final empty send waits for that), or the client is
gone (`service.connections` drops one that reads nothing for a while). So the bytes
of answers not yet sent stay bounded by the batch slots, whatever the clients do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from fastapi import Response
from starlette.types import Receive, Scope, Send

from replay.remote import protocol

#: Largest piece of a batch handed to the server at once.
CHUNK = 256 << 10


def chunks(parts: list[bytes | memoryview], size: int = CHUNK) -> Iterator[bytes]:
    """The bytes of `parts` in pieces of at most `size` (small parts joined, large
    ones cut), emptying `parts` as it goes so sent buffers can be freed."""
    parts.reverse()  # pop() from the end is O(1)
    group: list[bytes | memoryview] = []
    held = 0
    while parts:
        part = memoryview(parts.pop()).cast("B")
        while len(part):
            take = part[: size - held]
            part = part[len(take) :]
            group.append(take)
            held += len(take)
            if held == size:
                yield b"".join(group)
                group.clear()
                held = 0
    if group:
        yield b"".join(group)


class BatchResponse(Response):
    """A packed batch sent in chunks; `release` is called once it is sent or abandoned."""

    def __init__(
        self,
        parts: list[bytes | memoryview],
        *,
        release: Callable[[], None],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(media_type=protocol.MEDIA_TYPE, headers=headers)
        self.parts = parts
        self.nbytes = protocol.packed_nbytes(parts)
        self.headers["content-length"] = str(self.nbytes)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            for chunk in chunks(self.parts):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # waits (in the server) until the socket's buffer has drained
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.parts = []
            self._release()
