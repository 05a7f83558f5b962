"""Jinja2 rendering of the firmware sources from tinydyn/templates/."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np


def template_dir() -> Path:
    return Path(str(resources.files("tinydyn") / "templates"))


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def c_array_text(values: np.ndarray, per_line: int = 20) -> str:
    """Comma-separated integers, ``per_line`` to a line, indented for an initializer."""
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    return ",\n".join("    " + line for line in lines)


def render(template: str, out: Path, **context: Any) -> Path:
    out.write_text(environment().get_template(template).render(**context))
    return out
