"""Fine-tuning data shaped like the queries of world-model MPPI: the episode's real history followed by
MPPI-sampled action sequences simulated in the true physics.

The authors fine-tune on the P x H rollouts their simulator MPPI samples at every real step
(MPPI/hopper/hopper_mppi_collect_pt.py), which is the distribution a planner asks the world model
about. `SampledRollouts` is a `rollout.run_episode` observer for an oracle-MPPI episode on C MuJoCo:
every `every` steps (once `history` observations exist) it draws `count` action sequences of
`horizon` steps as MPPI draws its candidates (the planner's noise process and spread) around the
plan it just chose (the executed action, then the shifted mean), clips them to the bounds, simulates
them from the environment's exact state, and keeps each as a window of history + horizon steps:
the real last `history` observations and `history - 1` applied actions, then the sampled actions and
the simulated observations (control/mppi_corpus.write_corpus takes them as episodes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.control import mppi as mppi_lib
from westworld_jax.control import mujoco_backend
from westworld_jax.control import tasks as tasks_lib


class SampledRollouts:
  """Windows [N, history + horizon, .] of real history + MPPI-sampled, simulated futures."""

  def __init__(
    self,
    planner: mppi_lib.MPPI,
    task: tasks_lib.Task,
    history: int,
    horizon: int,
    every: int = 10,
    count: int = 16,
    seed: int = 0,
  ):
    if history < 1 or horizon < 1 or every < 1 or count < 1:
      raise ValueError(f"history, horizon, every and count must be >= 1, got {history}, {horizon}, {every}, {count}")
    if horizon > planner.config.horizon:
      raise ValueError(f"sampled horizon {horizon} exceeds the planner's {planner.config.horizon}")
    self.task, self.history, self.horizon, self.every, self.count = task, history, horizon, every, count
    self.physics = mujoco_backend.MujocoPhysics(task, nthread=1)
    self._sample = mppi_lib.candidate_sampler(planner, task.act_low, task.act_high, count, horizon)
    self._key = jax.random.key(seed)
    self._obs: list[np.ndarray] = []
    self._act: list[np.ndarray] = []
    self.windows_obs: list[np.ndarray] = []
    self.windows_act: list[np.ndarray] = []

  def __call__(self, t: int, s, u, plan) -> None:
    nu = self.task.num_act
    if s.alive.shape[0] != 1:
      raise ValueError("SampledRollouts observes one environment")
    self._obs.append(np.asarray(s.obs_hist[0, -1]))
    self._act.append(np.clip(np.asarray(u[0, :nu]), self.task.act_low, self.task.act_high))
    h = self.history
    if t + 1 < h or t % self.every or not bool(s.alive[0]):
      return
    if not isinstance(s.d, mujoco_backend.MjState):
      raise TypeError("SampledRollouts simulates in C MuJoCo: run the episode with physics 'mujoco'")
    self._key, sub = jax.random.split(self._key)
    chosen = jnp.concatenate([u[0, None, :], plan.mean[0, :-1]], axis=0)
    u_khn = np.asarray(self._sample(sub, chosen), np.float64)
    x = mujoco_backend.from_bits(np.asarray(s.d.bits)).reshape(1, -1)
    obs_kho = self.physics.rollout_obs(x, u_khn[None])[0]  # [K, horizon, Co]
    hist_obs = np.stack(self._obs[-h:])  # [h, Co], the last one is the current observation
    hist_act = np.stack(self._act[-h:-1]).reshape(h - 1, nu)  # the h - 1 actions applied between them
    for k in range(self.count):
      if not np.all(np.isfinite(obs_kho[k])):
        continue  # a diverged simulation
      self.windows_obs.append(np.concatenate([hist_obs, obs_kho[k]]).astype(np.float32))
      # act[t] follows obs[t]; the last slot (after the final observation) repeats the last action.
      self.windows_act.append(np.concatenate([hist_act, u_khn[k], u_khn[k, -1:]]).astype(np.float32))

  def arrays(self) -> dict:
    n, w = len(self.windows_obs), self.history + self.horizon
    return {
      "window_obs": np.stack(self.windows_obs) if n else np.zeros((0, w, self.task.num_obs), np.float32),
      "window_act": np.stack(self.windows_act) if n else np.zeros((0, w, self.task.num_act), np.float32),
    }

  def summary(self) -> dict:
    return {"windows": len(self.windows_obs), "window_len": self.history + self.horizon}

  def close(self) -> None:
    self.physics.close()
