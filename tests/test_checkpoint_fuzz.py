"""Property: whatever a checkpoint file holds, loading it gives a model or a one-line
TinydynError, never another exception (config fields of any type, missing or extra keys, tensors
of any shape and dtype, truncated or bit-flipped bytes)."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_model
from tinydyn.errors import TinydynError
from tinydyn.models.checkpoint import save_checkpoint
from tinydyn.models.lcnet import LCNetConfig
from tinydyn.pipeline import load_ir

TINY = {"widths": (4, 8), "blocks": (1, 1), "stem_width": 4, "exits": (0,)}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], bytes, Path]:
    folder = tmp_path_factory.mktemp("fuzz")
    path = save_checkpoint(folder / "base.pt", make_model(LCNetConfig(**TINY), seed=4), {"note": 1})
    payload = torch.load(path, weights_only=True)
    payload["dataset"] = "mnist"
    return payload, path.read_bytes(), folder / "mutant.pt"


def tensors() -> st.SearchStrategy[torch.Tensor]:
    shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4)
    fill = st.sampled_from([0.0, 1.0, -3.5, float("nan"), float("inf")])
    return st.builds(
        lambda shape, dtype, v: torch.full(shape, v).to(dtype), shapes, st.sampled_from(DTYPES), fill
    )


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.integers(-3, 2000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=6),
    st.lists(st.integers(-2, 1100), max_size=8),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
    tensors(),
)


@st.composite
def mutation(draw: st.DrawFn, payload: dict[str, Any]) -> tuple[str, Any]:
    """(kind, what): an edit of the payload, or of the file's bytes."""
    kind = draw(
        st.sampled_from(["config", "config_drop", "tensor", "tensor_drop", "tensor_add", "top", "bytes"])
    )
    if kind in ("config", "config_drop"):
        key = draw(st.sampled_from([*payload["config"], "extra_key"]))
        return kind, (key, draw(values))
    if kind in ("tensor", "tensor_drop", "tensor_add"):
        key = draw(st.sampled_from(sorted(payload["state_dict"])))
        want = payload["state_dict"][key]
        same_shape = st.builds(lambda d: torch.zeros(want.shape, dtype=d), st.sampled_from(DTYPES))
        return kind, (key, draw(st.one_of(tensors(), same_shape, scalars)))
    if kind == "top":
        key = draw(
            st.sampled_from(["format", "version", "config", "state_dict", "metrics", "dataset", "train"])
        )
        return kind, (key, draw(values))
    return kind, (draw(st.integers(0, 10**7)), draw(st.booleans()))


def apply(payload: dict[str, Any], data: bytes, kind: str, what: Any) -> bytes:
    p = copy.deepcopy(payload)
    if kind == "config":
        p["config"][what[0]] = what[1]
    elif kind == "config_drop":
        p["config"].pop(what[0], None)
    elif kind == "tensor":
        p["state_dict"][what[0]] = what[1]
    elif kind == "tensor_drop":
        p["state_dict"].pop(what[0])
    elif kind == "tensor_add":
        p["state_dict"][what[0] + ".extra"] = what[1]
    elif kind == "top":
        p[what[0]] = what[1]
    else:
        at, flip = what
        at %= len(data)
        # a flipped byte anywhere (zip header, pickle, tensor data) or a cut file
        return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :] if flip else data[:at]
    buf = io.BytesIO()
    torch.save(p, buf)
    return buf.getvalue()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_checkpoint_loads_or_is_a_one_line_error(
    base: tuple[dict[str, Any], bytes, Path], data: st.DataObject
) -> None:
    payload, raw, path = base
    kind, what = data.draw(mutation(payload))
    path.write_bytes(apply(payload, raw, kind, what))
    try:
        loaded = load_ir(path)  # what every command does with it: load, lower, find its dataset
        loaded.dataset(None)
    except TinydynError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 400 + len(str(path)), text
        return
    assert loaded.module.config.widths and loaded.ir.ops  # loaded: a usable model and its IR
