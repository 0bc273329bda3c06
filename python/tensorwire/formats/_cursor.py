"""A reading position in hostile bytes for the binary format readers (md5list, ptth):
fixed-size integers and byte runs, never past the end, with errors that name the format
and say what was being read, where, and how many bytes were left."""

from __future__ import annotations

import struct
from typing import Optional

from .._errors import FormatError

__all__ = ["Cursor"]


class Cursor:
    """Reads integers of one ``struct`` format (``"<i"``: little-endian int32, ``">I"``:
    big-endian uint32) and byte runs from ``buf[pos:end]`` (``end``: the buffer's end
    unless given), refusing to run past ``end``; ``what`` names the format in errors."""

    def __init__(
        self, buf: memoryview, what: str, integer: str, *, end: Optional[int] = None
    ) -> None:
        self.buf, self.what, self.pos = buf, what, 0
        self.end = len(buf) if end is None else end
        self._order, self._code = integer[0], integer[1:]
        self._size = struct.calcsize(integer)

    def left(self) -> int:
        """How many bytes are left before ``end``."""
        return self.end - self.pos

    def take(self, n: int, what: str) -> int:
        """Step over ``n`` bytes (``what`` they are, for the error); returns where they start."""
        if n > self.left():
            raise FormatError(
                f"{self.what}: {what} needs {n} bytes at offset {self.pos}, {self.left()} are left"
            )
        start = self.pos
        self.pos += n
        return start

    def read(self, n: int, what: str) -> bytes:
        """The next ``n`` bytes, copied."""
        start = self.take(n, what)
        return bytes(self.buf[start : self.pos])

    def ints(self, n: int, what: str) -> tuple[int, ...]:
        """The next ``n`` integers."""
        start = self.take(self._size * n, what)
        return struct.unpack_from(f"{self._order}{n}{self._code}", self.buf, start)
