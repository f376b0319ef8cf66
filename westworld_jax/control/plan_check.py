"""How far a world model's belief about its chosen plan is from the physics: the model error that
limits world-model MPPI, measured along the plans it executes.

`PlanCheck` is a `rollout.run_episode` observer. Every `every` control steps it takes the plan the
planner just chose (the executed action followed by the shifted mean: what it would execute without
replanning), costs it with the planner's own backend (the world model's prediction) and with the
simulator oracle from the environment's true state, both with the planner's cost (task, reference,
fall penalties), and records the totals and the per-step cost error up to the first simulated fall.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.control import mppi as mppi_lib
from westworld_jax.control import physics as physics_lib
from westworld_jax.control import tasks as tasks_lib


def _coster(backend, cfg, width: int):
  def one(s, u_ha):
    ctx = backend.context(s)
    lo, hi = backend.bounds(ctx)
    u = jnp.clip(u_ha[:, :width], lo, hi)[None]
    cost_kh, healthy_kh, terminal_k = backend.step_costs(ctx, u)
    return cost_kh[0], healthy_kh[0], mppi_lib.total_costs(cost_kh, healthy_kh, terminal_k, cfg)[0]

  return jax.jit(jax.vmap(one))


@functools.lru_cache(maxsize=None)
def _costers(planner: mppi_lib.MPPI, task: tasks_lib.Task, physics: str):
  """(predicted, simulated) plan costers of a planner: one oracle and one compilation per planner,
  not per episode (a PlanCheck is made for every episode)."""
  oracle = physics_lib.make_oracle(task, physics)
  return (
    _coster(planner.backend, planner.config, planner.backend.action_dim),
    _coster(oracle, planner.config, oracle.action_dim),
  )


class PlanCheck:
  """Predicted (planner's backend) vs simulated (oracle) cost of each chosen plan, every `every` steps."""

  def __init__(self, planner: mppi_lib.MPPI, task: tasks_lib.Task, physics: str = "auto", every: int = 50):
    if every < 1:
      raise ValueError(f"plan_check every must be >= 1 step, got {every}")
    self.every = int(every)
    self._predicted, self._simulated = _costers(planner, task, physics)
    self.rows: list[dict] = []

  def __call__(self, t: int, s, u, plan) -> None:
    if t % self.every or not bool(jnp.all(s.alive)):
      return
    u_eha = jnp.concatenate([u[:, None], plan.mean[:, :-1]], axis=1)
    pc, ph, pt = (np.asarray(x) for x in self._predicted(s, u_eha))
    sc, sh, st = (np.asarray(x) for x in self._simulated(s, u_eha))
    for e in range(u_eha.shape[0]):
      up = int(np.argmin(sh[e])) + 1 if not sh[e].all() else sh.shape[1]  # steps up to the simulated fall
      self.rows.append(
        {
          "step": int(t),
          "predicted_total": float(pt[e]),
          "simulated_total": float(st[e]),
          "step_cost_mae": float(np.mean(np.abs(pc[e, :up] - sc[e, :up]))),
          "predicted_fall": bool(not ph[e].all()),
          "simulated_fall": bool(not sh[e].all()),
        }
      )

  def summary(self) -> dict:
    """Means over the checked plans (empty when none was checked)."""
    if not self.rows:
      return {}
    col = lambda k: np.array([r[k] for r in self.rows], np.float64)
    return {
      "plans": len(self.rows),
      "predicted_total": float(col("predicted_total").mean()),
      "simulated_total": float(col("simulated_total").mean()),
      "total_abs_error": float(np.abs(col("predicted_total") - col("simulated_total")).mean()),
      "step_cost_mae": float(col("step_cost_mae").mean()),
      "predicted_falls": float(col("predicted_fall").mean()),
      "simulated_falls": float(col("simulated_fall").mean()),
    }
