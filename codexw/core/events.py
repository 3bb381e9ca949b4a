"""Reading codex's --json stream safely: lines split in linear time, and the cheap checks
that decide whether a line may be handed to the JSON parser at all.

codex's stdout is untrusted input: one line can be tens of megabytes long or nested
hundreds of thousands of levels deep. Nothing here is quadratic in a line's length and
nothing recurses per nesting level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A line longer than this is not parsed (the raw log keeps it all). Real events are far
# smaller; an agent message or command output of several megabytes still fits.
MAX_LINE_BYTES = 8 << 20
# Real events nest 4 or 5 levels deep; json.loads recurses once per level.
MAX_DEPTH = 64

READ_SIZE = 1 << 16  # for reading a log file through a LineSplitter


@dataclass(frozen=True)
class Skipped:
    """An oversized line the splitter did not keep: only its length is known."""

    size: int


class LineSplitter:
    """Splits a byte stream into lines, in time linear in its length.

    The partial line waiting for its newline is a list of chunks, joined once when the
    newline arrives, and each chunk is searched once. Past `max_line` bytes the partial
    line is dropped and the rest up to the next newline only counted: `feed` then
    returns a `Skipped` in its place, so a line of any length costs bounded memory.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._parts: list[bytes] = []
        self._size = 0  # bytes of the pending line so far (kept or skipped)
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes of the line not yet ended by a newline."""
        return self._size

    def feed(self, chunk: bytes) -> list[bytes | Skipped]:
        """The lines `chunk` completes, without their newlines."""
        out: list[bytes | Skipped] = []
        start = 0
        end = len(chunk)
        while start < end:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._hold(chunk if start == 0 else chunk[start:])
                break
            size = self._size + newline - start
            if self._skipping or size > self.max_line:
                out.append(Skipped(size))
            elif self._parts:
                self._parts.append(chunk[start:newline])
                out.append(b"".join(self._parts))
            else:
                out.append(chunk[start:newline])
            self._parts = []
            self._size = 0
            self._skipping = False
            start = newline + 1
        return out

    def _hold(self, rest: bytes) -> None:
        self._size += len(rest)
        if self._skipping:
            return
        if self._size > self.max_line:
            self._parts = []  # over the cap: stop buffering, only count until the newline
            self._skipping = True
        else:
            self._parts.append(rest)

    def close(self) -> list[bytes | Skipped]:
        """The last line when the stream ended without a newline (or nothing)."""
        if not self._size:
            return []
        last: bytes | Skipped = (
            Skipped(self._size) if self._skipping else b"".join(self._parts)
        )
        self._parts = []
        self._size = 0
        self._skipping = False
        return [last]


# `too_deep` reads the brackets outside strings as bits, 8 to a byte: [ and { are 1,
# ] and } are 0. Per byte value: how far it moves the depth, and its highest point.
_AS_BITS = bytes.maketrans(b"[{]}", b"1100")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _byte_steps(value: int) -> tuple[int, int]:
    depth = peak = 0
    for bit in range(7, -1, -1):
        depth += 1 if value >> bit & 1 else -1
        peak = max(peak, depth)
    return depth, peak


_NET, _PEAK = zip(*(_byte_steps(v) for v in range(256)), strict=True)


def too_deep(line: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether `line` nests arrays/objects deeper than `limit`, found without parsing it,
    in linear time and constant stack.

    Escaped backslashes and quotes are removed first, so every quote left delimits a
    string; the text outside strings is reduced to its brackets, packed 8 to a byte,
    and the depth walked a byte at a time with a table. UTF-8 multi-byte sequences hold
    no ASCII bytes, so scanning bytes is safe. Invalid JSON may answer either way: the
    parser refuses it anyway (and never recurses far: it stops at the recursion limit).
    """
    if line.count(b"[") + line.count(b"{") <= limit:
        return False  # cannot nest deeper than it has openings: the usual case
    text = line.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(text.split(b'"')[0::2])
    bits = outside.translate(_AS_BITS, _NOT_BRACKETS)
    if bits.count(b"1") <= limit:
        return False
    bits += b"0" * (-len(bits) % 8)  # closing brackets at the end change no depth reached
    packed = int(bits, 2).to_bytes(len(bits) // 8, "big")
    depth = 0
    for value in packed:
        if depth + _PEAK[value] > limit:
            return True
        depth += _NET[value]
    return False


def parse_event(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """One line of the stream as an event, checked before json.loads sees it.

    Returns (event, None); or (None, why) for a line refused as hostile (too long, too
    deep, or meant as an event but not valid JSON); or (None, None) for a blank line or
    stray text, which codex may print and which is no event. The values inside an event
    are still untrusted: check their types where they are used.
    """
    if len(line) > MAX_LINE_BYTES:
        return None, f"{len(line)} bytes, over the {MAX_LINE_BYTES} byte limit"
    if not line.strip():
        return None, None
    if too_deep(line):
        return None, f"nested deeper than {MAX_DEPTH} levels"
    try:
        event = json.loads(line.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        if line.lstrip().startswith(b"{"):  # meant as an event: say so
            return None, "not valid JSON"
        return None, None
    return (event, None) if isinstance(event, dict) else (None, None)
