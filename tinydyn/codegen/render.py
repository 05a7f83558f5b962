"""Jinja2 rendering of the firmware sources from tinydyn/templates/.

Generated C and Makefiles must not be steerable by what an IR file holds. Names are already
safe identifiers when they get here (the IR schema, :mod:`tinydyn.ir_schema`), and rendering
adds a second line of defence: autoescaping is on, and every interpolated value passes
:func:`guard_value`, which lets through numbers, text made only of characters that cannot end
a comment, a string literal or a line, and values the code marked :func:`trusted`
(pre-rendered integer arrays, board definitions). Anything else stops the build. Context
filters escape for the place a name lands: ``c_comment``, ``c_string``, ``make_comment``.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from tinydyn.codegen.errors import CodegenError

# No newline, quote, backslash, '$', '#', '?' (trigraphs), '@' or backtick: nothing that ends a
# line, a comment or a literal, or expands in make. Comment delimiters are checked apart.
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_.,:;=+\-/%()\[\]<>!&|~^ *{}]*")
_COMMENT_MARKS = ("/*", "*/", "//")


def trusted(value: str) -> Markup:
    """Text written by tinydyn's own code (never from a file): rendered as it is."""
    return Markup(value)


def trusted_fields(definition: Any) -> dict[str, Any]:
    """A code-defined record (a board definition) with its text fields marked :func:`trusted`."""
    out: dict[str, Any] = {}
    properties = [k for k in dir(type(definition)) if isinstance(getattr(type(definition), k), property)]
    for key, value in [*vars(definition).items(), *((k, getattr(definition, k)) for k in properties)]:
        if isinstance(value, str):
            value = trusted(value)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            value = tuple(trusted(v) for v in value)
        out[key] = value
    return out


def guard_value(value: Any) -> Any:
    """Jinja ``finalize``: what an interpolation may print (raises CodegenError otherwise)."""
    if isinstance(value, Markup):
        return value
    if isinstance(value, bool):
        raise CodegenError("a template printed a boolean: render it as 0/1 explicitly")
    if isinstance(value, int | np.integer | float | np.floating):
        return Markup(str(value))
    if (
        isinstance(value, str)
        and _PLAIN_TEXT.fullmatch(value)
        and not any(m in value for m in _COMMENT_MARKS)
    ):
        return Markup(value)
    raise CodegenError(
        f"refusing to write {str(value)[:40]!r} into generated code: it is not plain text "
        "(names in an IR must be identifiers; re-run the lowering)"
    )


def c_comment(value: Any) -> Markup:
    """Text inside ``/* */``: comment delimiters, trigraphs and line breaks defused."""
    text = "".join(ch if ch.isprintable() and ch != "\\" else "?" for ch in str(value))
    text = text.replace("*/", "* /").replace("/*", "/ *").replace("??", "?_?")
    return Markup(text)


def c_string(value: Any) -> Markup:
    """Text inside a C string literal: quotes, backslashes and non-ASCII as escapes."""
    out = []
    for byte in str(value).encode("utf-8"):
        ch = chr(byte)
        out.append(ch if 0x20 <= byte < 0x7F and ch not in '"\\?' else f"\\{byte:03o}")
    return Markup("".join(out))


def make_comment(value: Any) -> Markup:
    """Text on a Makefile comment line: no line break or continuation."""
    return Markup("".join(ch if ch.isprintable() and ch != "\\" else "?" for ch in str(value)))


def template_dir() -> Path:
    return Path(str(resources.files("tinydyn") / "templates"))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=True,
        finalize=guard_value,
    )
    env.filters.update(c_comment=c_comment, c_string=c_string, make_comment=make_comment)
    return env


def c_array_text(values: np.ndarray, per_line: int = 20) -> Markup:
    """Comma-separated integers, ``per_line`` to a line, indented for an initializer."""
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    return trusted(",\n".join("    " + line for line in lines))


def render(template: str, out: Path, **context: Any) -> Path:
    out.write_text(environment().get_template(template).render(**context))
    return out
