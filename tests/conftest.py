"""Shared fixtures: small real models lowered to the IR, and tool requirements.

A test that needs a tool (a compiler, QEMU, the Debian dataset) is skipped only outside CI;
under CI (CI=true) a missing tool is a failure, because .ci/run installs them all.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tinydyn.models.lcnet import LCNet, LCNetConfig
from tinydyn.models.lcnet_lower import lower

FMNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Skip locally when a tool is missing; fail in CI, where setup must have installed it."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: .ci/run must install it")
    pytest.skip(f"{what} not installed")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, name)
    return str(path)


def make_model(config: LCNetConfig, seed: int = 0, warm_images: np.ndarray | None = None) -> LCNet:
    """A real LC-Net with Brevitas scales initialised by a few training-mode passes.

    BN statistics and gate biases are randomised so that the integer model really skips
    blocks and channels on some inputs (an untrained gate is always open).
    """
    warnings.filterwarnings("ignore", module="brevitas")
    torch.manual_seed(seed)
    model = LCNet(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.uniform_(-0.3, 0.3, generator=gen)
            if module.__class__.__name__ == "Gate":
                module.fc.bias.uniform_(-0.6, 1.0, generator=gen)
    model.train()
    if warm_images is None:
        warm_images = torch.rand(32, config.in_channels, config.input_size, config.input_size, generator=gen)
    else:
        warm_images = torch.from_numpy(warm_images.astype(np.float32) / 255.0)
    with torch.no_grad():
        for _ in range(3):
            model(warm_images)
    model.eval()
    return model


@pytest.fixture(scope="session")
def fashion_test():
    from tinydyn.data import load_dataset

    require((FMNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file(), "Debian package dataset-fashion-mnist")
    return load_dataset("fashion-mnist", "test")


@pytest.fixture(scope="session")
def small_model(fashion_test):
    config = LCNetConfig(
        widths=(8, 16), blocks=(1, 1), stem_width=8, exits=(0,), classes=fashion_test.classes
    )
    return make_model(config, seed=1, warm_images=fashion_test.images[:64])


@pytest.fixture(scope="session")
def small_ir(small_model):
    return lower(small_model, name="small")
