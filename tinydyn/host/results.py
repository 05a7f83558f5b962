"""Results files: one JSON object per line, appended and fsync'd as each result arrives.

A run killed at any moment loses at most the line being written; ``load_records`` drops such a
torn last line and ``ResultsWriter`` cuts it off before appending, so a resumed run continues the
same file. ``done_seqs`` tells a resumed run which images are already measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinydyn.errors import TinydynError


class ResultsFileError(TinydynError):
    """A results file that is damaged somewhere other than its last line."""


def _scan(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records and the byte length of the intact prefix (everything before a torn last line)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        last = end < 0 or end == len(data) - 1
        try:
            if end < 0:
                raise ValueError("no newline")  # a record is complete only with its newline
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if last:
                return records, pos  # torn write from a kill: drop it
            lineno = data.count(b"\n", 0, pos) + 1
            raise ResultsFileError(
                f"{path}:{lineno} is not a JSON object line: the file is damaged; fix or remove that line"
            ) from None
        records.append(record)
        pos = end + 1
    return records, pos


def load_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a results file (none if it does not exist)."""
    return _scan(Path(path))[0]


def done_seqs(path: str | os.PathLike[str]) -> set[int]:
    """Sequence numbers already recorded (records with a "seq" key)."""
    return {int(r["seq"]) for r in load_records(path) if "seq" in r}


class ResultsWriter:
    """Append-only JSON-lines writer; every ``write`` is on disk when it returns."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _, intact = _scan(self.path)
        self._f = open(self.path, "ab")  # closed in close()
        if self._f.tell() != intact:
            self._f.truncate(intact)  # cut a torn last line so the next record starts a fresh line
            self._f.seek(intact)
            os.fsync(self._f.fileno())

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
