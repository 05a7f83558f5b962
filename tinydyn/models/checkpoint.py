"""Checkpoints: weights + architecture config + metrics, loaded without executing code."""

from __future__ import annotations

import pickle
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import brevitas.nn as qnn
import torch
from torch import nn

from tinydyn.errors import TinydynError
from tinydyn.models.lcnet import MAX_PARAMETERS, ConfigError
from tinydyn.models.registry import DEFAULT_FAMILY, UnknownFamilyError, get_family

CHECKPOINT_FORMAT = "tinydyn-checkpoint"
CHECKPOINT_VERSION = 1
BUNDLED = "fashion_lcnet.pt"
# the bundled model with its gates folded and fine-tuned (tinydyn train --fold-gates): for FPGAs
BUNDLED_FPGA = "fashion_lcnet_fpga.pt"
# the static int8 baseline of the same ResNet (no gates, no exits): the accuracy to keep, and the
# teacher and backbone a dynamic model starts from (its checkpoint records the command)
BUNDLED_STATIC = "fashion_static.pt"


class CheckpointError(TinydynError):
    """A checkpoint that is missing, corrupt, or does not match its architecture."""


def bundled_checkpoint() -> Path:
    """The small pretrained Fashion-MNIST LC-Net shipped with the package."""
    return Path(str(resources.files("tinydyn") / "checkpoints" / BUNDLED))


def bundled_static_checkpoint() -> Path:
    """The static int8 ResNet baseline (92.92% on the Fashion-MNIST test set, integer reference)."""
    return Path(str(resources.files("tinydyn") / "checkpoints" / BUNDLED_STATIC))


def bundled_fpga_checkpoint() -> Path:
    """The bundled model without gates (folded, fine-tuned 4 epochs), exits kept: what
    ``tinydyn fpga`` builds by default."""
    return Path(str(resources.files("tinydyn") / "checkpoints" / BUNDLED_FPGA))


def save_checkpoint(
    path: str | Path, model: nn.Module, metrics: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "family": model.family,  # type: ignore[attr-defined]
        "config": model.config.to_json(),  # type: ignore[attr-defined]
        "state_dict": model.state_dict(),
        "metrics": metrics,
        **(extra or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a half checkpoint behind
    return path


# A file larger than the biggest model tinydyn builds (float32 weights, 4x slack for BN
# statistics, Brevitas scales and the training history) is not a checkpoint: refuse it unread.
MAX_CHECKPOINT_BYTES = 4 * 4 * MAX_PARAMETERS
# optional top-level entries and the type each must have (anything else is a tampered file):
# 'tinydyn train' records the recipe (every option, defaults resolved), the command line and,
# when training ends, the evaluation on test images (integer reference and Brevitas)
_OPTIONAL: dict[str, type] = {
    "metrics": dict,
    "train": dict,
    "dataset": str,
    "family": str,
    "recipe": dict,
    "command": str,
    "evaluation": dict,
}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The payload of a checkpoint, checked for shape (not yet for its model: see load_model)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found: train one with 'tinydyn train' or omit it to use the bundled model"
        )
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"checkpoint {path} is {size // 2**20} MiB, more than any model tinydyn builds "
            f"({MAX_CHECKPOINT_BYTES // 2**20} MiB): pass a file written by 'tinydyn train'"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse an untrusted file means "corrupt"
        # torch's own text is long and version-dependent: a short fixed reason instead
        unsafe = isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc)
        why = (
            "it holds Python objects other than tensors and plain data, which tinydyn never loads"
            if unsafe
            else f"torch cannot read it: {type(exc).__name__}"
        )
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a tinydyn checkpoint ({why}): re-run 'tinydyn train'"
        ) from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if not isinstance(fmt, str) or fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a tinydyn checkpoint: pass a file written by 'tinydyn train'")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version != CHECKPOINT_VERSION:
        shown = version if isinstance(version, int) and abs(version) < 1000 else "another"
        raise CheckpointError(
            f"checkpoint {path} has version {shown}, this tinydyn reads {CHECKPOINT_VERSION}: retrain it"
        )
    for key, kind in _OPTIONAL.items():
        if key in payload and not isinstance(payload[key], kind):
            raise CheckpointError(
                f"checkpoint {path} has a {key!r} entry of type {type(payload[key]).__name__} where "
                f"tinydyn writes {kind.__name__}: it was edited; retrain it"
            )
    return payload


def load_model(path: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint describes (its family's module) and load its weights (eval
    mode). Old checkpoints record no family: they are LC-Nets.

    Everything is checked before use: the config (types and bounds) before a module is built,
    every tensor (name, type, shape, dtype, finite) before it is loaded."""
    path = Path(path) if path is not None else bundled_checkpoint()
    payload = read_checkpoint(path)
    try:
        family = get_family(payload.get("family", DEFAULT_FAMILY))
    except UnknownFamilyError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    try:
        config = family.config_from_json(payload.get("config"))
    except ConfigError as exc:
        raise CheckpointError(
            f"checkpoint {path} has an invalid model config ({exc.problem}): retrain it"
        ) from None
    model = family.build(config)
    problems = state_dict_problems(model, payload.get("state_dict"))
    if not problems:
        try:
            result = model.load_state_dict(payload["state_dict"], strict=False)
            problems = [f"'{k}' is missing" for k in result.missing_keys if not _optional_key(k)]
        except Exception as exc:  # noqa: BLE001 - checked above; anything left is still a bad file
            problems = [f"loading fails with {type(exc).__name__}"]
    if problems:
        more = f", and {len(problems) - 1} more problems" if len(problems) > 1 else ""
        raise CheckpointError(
            f"checkpoint {path} does not match its architecture ({problems[0]}{more}): "
            "it was edited or written by another version; retrain it"
        )
    model.eval()
    return model, payload


def _key_text(key: Any) -> str:
    # keys come from the file: show short names whole, describe anything else
    if not isinstance(key, str):
        return f"a {type(key).__name__} key"
    return f"'{key}'" if len(key) <= 80 and key.isprintable() else f"a {len(key)}-character key"


def state_dict_problems(model: nn.Module, state: Any) -> list[str]:
    """What keeps ``state`` from being loaded into ``model`` as is; empty when it fits exactly."""
    if not isinstance(state, dict):
        return [f"the tensor table is a {type(state).__name__}, not a mapping"]
    expected = model.state_dict()
    # Brevitas creates activation scales when it loads them, so a fresh model lacks these keys
    scales = {
        f"{name}.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value"
        for name, module in model.named_modules()
        if isinstance(module, qnn.QuantReLU | qnn.QuantIdentity)
    }
    problems = []
    for key, value in state.items():
        want = expected.get(key) if isinstance(key, str) else None
        if want is None and key in scales:
            want = torch.zeros((), dtype=torch.float32)  # a per-tensor scale: one float32 scalar
        if want is None:
            problems.append(f"{_key_text(key)} is not part of the model")
        elif not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            problems.append(f"{_key_text(key)} is a {type(value).__name__}, not a dense tensor")
        elif tuple(value.shape) != tuple(want.shape):
            problems.append(f"{_key_text(key)} has shape {tuple(value.shape)}, not {tuple(want.shape)}")
        elif value.dtype != want.dtype:
            problems.append(f"{_key_text(key)} is {value.dtype}, not {want.dtype}")
        elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
            problems.append(f"{_key_text(key)} holds NaN or infinite values")
    missing = [k for k in [*expected, *sorted(scales)] if k not in state and not _optional_key(k)]
    problems += [f"{_key_text(k)} is missing" for k in missing]
    return problems


def _optional_key(key: str) -> bool:
    # Brevitas keeps some runtime counters outside the state dict of a fresh module
    return key.endswith(("zero_hw_sentinel", "counter"))
