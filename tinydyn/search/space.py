"""The search space of an S2DNAS transformation and its encoding as a ``MultiDiscrete`` action.

Per resolution: one choice among every set of ``s - 1`` strictly increasing split points in
``1..G-1`` (every stage gets at least one group; C(G-1, s-1) = 21 choices for G = 8, s = 3),
then one 0/1 choice per concat indicator m_ji (j < i). A categorical over whole split tuples
rather than one number per split point keeps every action valid and every architecture one
action."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinydyn.models.s2dnas import pair_count


@dataclass(frozen=True)
class SearchSpace:
    resolutions: int
    groups: int
    stages: int

    @property
    def split_choices(self) -> list[tuple[int, ...]]:
        return list(itertools.combinations(range(1, self.groups), self.stages - 1))

    @property
    def pairs(self) -> int:
        return pair_count(self.stages)

    def nvec(self) -> list[int]:
        """The ``MultiDiscrete`` sizes: per resolution the split choice, then the indicators."""
        return [len(self.split_choices), *([2] * self.pairs)] * self.resolutions

    def size(self) -> int:
        return math.prod(self.nvec())

    def decode(self, action: Any) -> dict[str, list]:
        """{'splits': [...], 'concat': [...]} of an action (one list per resolution)."""
        values = [int(v) for v in np.asarray(action).reshape(-1)]
        width = 1 + self.pairs
        if len(values) != width * self.resolutions:
            raise ValueError(f"an action has {width * self.resolutions} entries, not {len(values)}")
        choices = self.split_choices
        splits, concat = [], []
        for r in range(self.resolutions):
            part = values[r * width : (r + 1) * width]
            splits.append(list(choices[part[0]]))
            concat.append([bool(v) for v in part[1:]])
        return {"splits": splits, "concat": concat}

    def encode(self, settings: dict[str, list]) -> list[int]:
        choices = self.split_choices
        out: list[int] = []
        for points, flags in zip(settings["splits"], settings["concat"], strict=True):
            out += [choices.index(tuple(points)), *(int(f) for f in flags)]
        return out

    def sample(self, rng: np.random.Generator) -> list[int]:
        return [int(rng.integers(n)) for n in self.nvec()]


def settings_key(settings: dict[str, list]) -> str:
    """A short stable text of an architecture: '3,5:111|2,6:101|...' (the log's and cache's key)."""
    return "|".join(
        ",".join(str(p) for p in points) + ":" + "".join("1" if f else "0" for f in flags)
        for points, flags in zip(settings["splits"], settings["concat"], strict=True)
    )


def cli_settings(settings: dict[str, list]) -> tuple[str, str]:
    """The architecture as `tinydyn train --splits A --concat B` values."""
    splits = "/".join(",".join(str(p) for p in points) for points in settings["splits"])
    concat = "/".join("".join("1" if f else "0" for f in flags) for flags in settings["concat"])
    return splits, concat
