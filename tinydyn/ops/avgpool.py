"""``avgpool``: k×k window means rounded half away from zero; padding counts as zeros."""

from __future__ import annotations

import numpy as np

from tinydyn.ops.arith import avg_pool
from tinydyn.ops.maxpool import MaxPool


class AvgPool(MaxPool):
    kind = "avgpool"

    def pool(self, x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
        return avg_pool(x, k, stride, pad)
