"""Checkpoints: weights + architecture config + metrics, loaded without executing code."""

from __future__ import annotations

import pickle
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from tinydyn.errors import TinydynError
from tinydyn.models.lcnet import ConfigError, LCNet, LCNetConfig

CHECKPOINT_FORMAT = "tinydyn-checkpoint"
CHECKPOINT_VERSION = 1
BUNDLED = "fashion_lcnet.pt"
# the bundled model with its gates folded and fine-tuned (tinydyn train --fold-gates): for FPGAs
BUNDLED_FPGA = "fashion_lcnet_fpga.pt"


class CheckpointError(TinydynError):
    """A checkpoint that is missing, corrupt, or does not match its architecture."""


def bundled_checkpoint() -> Path:
    """The small pretrained Fashion-MNIST LC-Net shipped with the package."""
    return Path(str(resources.files("tinydyn") / "checkpoints" / BUNDLED))


def bundled_fpga_checkpoint() -> Path:
    """The bundled model without gates (folded, fine-tuned 4 epochs), exits kept: what
    ``tinydyn fpga`` builds by default."""
    return Path(str(resources.files("tinydyn") / "checkpoints" / BUNDLED_FPGA))


def save_checkpoint(
    path: str | Path, model: LCNet, metrics: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_json(),
        "state_dict": model.state_dict(),
        "metrics": metrics,
        **(extra or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a half checkpoint behind
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found: train one with 'tinydyn train' or omit it to use the bundled model"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a tinydyn checkpoint ({first[:120]}): "
            "re-run 'tinydyn train'"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a tinydyn checkpoint: pass a file written by 'tinydyn train'")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {payload.get('version')}, "
            f"this tinydyn reads {CHECKPOINT_VERSION}: retrain it"
        )
    return payload


def load_model(path: str | Path | None = None) -> tuple[LCNet, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (eval mode)."""
    path = Path(path) if path is not None else bundled_checkpoint()
    payload = read_checkpoint(path)
    try:
        config = LCNetConfig.from_json(payload["config"])
    except (ConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid model config ({exc}): retrain it") from None
    model = LCNet(config)
    try:
        result = model.load_state_dict(payload["state_dict"], strict=False)
        problems = [k for k in result.missing_keys if not _optional_key(k)] + list(result.unexpected_keys)
    except (RuntimeError, KeyError, TypeError) as exc:
        mismatch = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "")
        problems = [mismatch.split(":")[0].replace("size mismatch for ", "") or type(exc).__name__]
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match its architecture ({len(problems)} mismatched tensors, e.g. "
            f"'{problems[0]}'): it was edited or written by another version; retrain it"
        )
    model.eval()
    return model, payload


def _optional_key(key: str) -> bool:
    # Brevitas keeps some runtime counters outside the state dict of a fresh module
    return key.endswith(("zero_hw_sentinel", "counter"))
