"""Errors of the IR → C generator."""

from __future__ import annotations

from tinydyn.errors import TinydynError


class CodegenError(TinydynError):
    """An IR the generator cannot turn into firmware (names the layer and the fix)."""
