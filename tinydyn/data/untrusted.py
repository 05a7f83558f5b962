"""Helpers for reading dataset files a user hands tinydyn: every one is untrusted.

A file's size is checked before it is read, so a multi-gigabyte file (or a sparse one that
claims to be) is refused instead of filling memory, and exception texts are folded into
one line before they go into a :class:`DatasetError`.
"""

from __future__ import annotations

from pathlib import Path

from tinydyn.data.dataset import DatasetError

MIB = 1 << 20
# Longest exception text quoted inside an error message; longer ones are shortened at a
# word boundary, so the line stays readable and no word is cut.
_MAX_REASON_CHARS = 160


def reason(exc: BaseException) -> str:
    """``Type: text`` of ``exc`` on one line, at most about 160 characters, whole words."""
    try:
        text = str(exc)
    except Exception:  # str() itself can fail, e.g. on an int too long to print
        text = ""
    text = " ".join(f"{type(exc).__name__}: {text}".split()).rstrip(":")
    if len(text) <= _MAX_REASON_CHARS:
        return text
    cut = text.rfind(" ", 0, _MAX_REASON_CHARS)
    # No space to cut at: the type alone, rather than half a word.
    return text[:cut].rstrip() + " ..." if cut > 0 else type(exc).__name__


def human_size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n} bytes"


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc


def check_size(path: Path, size: int, max_bytes: int, what: str) -> None:
    """Refuse a file larger than any genuine ``what`` before a byte of it is read."""
    if size > max_bytes:
        raise DatasetError(
            f"{path}: {human_size(size)} is larger than any {what} (at most "
            f"{human_size(max_bytes)}); the file is corrupt or not one, re-download it"
        )


def read_bounded(path: Path, max_bytes: int, what: str) -> bytes:
    """All bytes of ``path``, refusing it (before reading) when over ``max_bytes``."""
    check_size(path, file_size(path), max_bytes, what)
    try:
        with path.open("rb") as f:
            # One byte more than allowed shows a file that grew after the size check.
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    check_size(path, len(raw), max_bytes, what)
    return raw
