"""Training-time augmentation on whole batches of uint8 images, in torch (no per-image Python).

Every random choice of an epoch is drawn up front, one per position in the epoch's order,
from a generator seeded by (seed, epoch): the image at position ``i`` gets the same crop and
flip whether one process trains or several share the epoch (``DistributedSampler`` order), and
a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# digits are not mirror-symmetric (a flipped 2, 3, 7 is no digit); clothes and CIFAR's objects are
FLIP_DATASETS = ("fashion-mnist", "cifar10")


def default_flip(dataset: str) -> bool:
    """Horizontal flip for Fashion-MNIST and CIFAR-10, never for MNIST digits."""
    return dataset in FLIP_DATASETS


def default_crop_padding(size: int) -> int:
    """CIFAR's standard 4 px of padding on 32 px images, scaled: size // 8 (3 px on 28 px)."""
    return size // 8


@dataclass
class EpochDraws:
    """Per-position random choices of one epoch: crop offsets (0..2·pad) and flips."""

    dy: torch.Tensor  # (N,) int64
    dx: torch.Tensor  # (N,) int64
    flip: torch.Tensor  # (N,) bool


def draw_epoch(count: int, padding: int, flip: bool, generator: torch.Generator) -> EpochDraws:
    high = 2 * padding + 1
    dy = torch.randint(0, high, (count,), generator=generator)
    dx = torch.randint(0, high, (count,), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    return EpochDraws(dy, dx, flips & flip)


def augment(
    images: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Random crop (zero padding of ``padding`` px, then the window at offsets ``dy``, ``dx``)
    and horizontal flip where ``flip``, on a uint8 (N, C, H, W) batch; same shape and dtype."""
    n, c, h, w = images.shape
    out = images
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        device = images.device
        rows = (dy.to(device)[:, None] + torch.arange(h, device=device)).view(n, 1, h, 1)
        cols = (dx.to(device)[:, None] + torch.arange(w, device=device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=device).view(n, 1, 1, 1)
        chans = torch.arange(c, device=device).view(1, c, 1, 1)
        out = padded[batch, chans, rows, cols]
    mask = flip.to(images.device)
    if bool(mask.any()):
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(3), out)
    return out


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → the float input the Brevitas model sees (pixel / 255, the exact grid the
    integer model reads)."""
    return images.to(torch.float32).div_(255.0)
