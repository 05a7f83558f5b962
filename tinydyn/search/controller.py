"""The two ways candidates are proposed: PPO (stable-baselines3, clipped objective) over a
``MultiDiscrete`` action space, and uniform random sampling (the baseline at the same budget).

PPO sees a one-step episode per candidate: a constant observation (the controller has no input,
like the paper's RNN before its first step), an action = one architecture, the reward = the
candidate's. Its vector environment hands a whole step of actions (one per environment) to the
evaluator at once, so the candidates of one step train in parallel on Ray."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from tinydyn.search.space import SearchSpace

Evaluate = Callable[[list[list[int]]], list[float]]  # actions -> rewards, in order


class CandidateVecEnv(VecEnv):
    """``num_envs`` one-step episodes per step, scored together by ``evaluate``."""

    def __init__(self, space: SearchSpace, num_envs: int, evaluate: Evaluate) -> None:
        super().__init__(
            num_envs,
            spaces.Box(0.0, 1.0, (1,), np.float32),
            spaces.MultiDiscrete(np.array(space.nvec(), dtype=np.int64)),
        )
        self.evaluate = evaluate
        self._actions: np.ndarray | None = None

    def _obs(self) -> np.ndarray:
        return np.zeros((self.num_envs, 1), dtype=np.float32)

    def reset(self) -> np.ndarray:
        return self._obs()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        assert self._actions is not None
        rewards = self.evaluate([[int(v) for v in a] for a in self._actions])
        self._actions = None
        infos = [{"terminal_observation": np.zeros(1, dtype=np.float32)} for _ in range(self.num_envs)]
        return self._obs(), np.asarray(rewards, dtype=np.float32), np.ones(self.num_envs, dtype=bool), infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name, None) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [None for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


def rollout_shape(budget: int, workers: int, steps_per_update: int) -> tuple[int, int]:
    """(environments, steps per environment per PPO update): environments as many as workers
    (candidates of one step train in parallel), both dividing the budget so that PPO proposes
    exactly ``budget`` candidates."""
    envs = max(d for d in range(1, min(workers, budget) + 1) if budget % d == 0)
    per_env = budget // envs
    steps = max(d for d in range(1, min(steps_per_update, per_env) + 1) if per_env % d == 0)
    return envs, steps


def make_ppo(env: CandidateVecEnv, steps: int, seed: int, learning_rate: float) -> Any:
    from stable_baselines3 import PPO

    return PPO(
        "MlpPolicy",
        env,
        n_steps=steps,
        batch_size=steps * env.num_envs,  # one minibatch: the rollouts are a handful of candidates
        n_epochs=10,
        learning_rate=learning_rate,
        clip_range=0.2,
        ent_coef=0.01,  # keeps sampling other architectures while the reward signal is thin
        gamma=0.0,  # one-step episodes: the advantage is the reward minus the value
        gae_lambda=1.0,
        policy_kwargs={"net_arch": [32]},
        seed=seed,
        device="cpu",
        verbose=0,
    )
