"""How far a world model's belief about its chosen plan is from the physics: the model error that
limits world-model MPPI, measured along the plans it executes.

`PlanCheck` is a `rollout.run_episode` observer. Every `every` control steps it takes the plan the
planner just chose (the executed action followed by the shifted mean: what it would execute without
replanning), costs it with the planner's own backend (the world model's prediction) and with the
simulator oracle from the environment's true state, both with the planner's cost (task, reference,
fall penalties), and records the totals and the per-step cost error up to the first simulated fall.
With `candidates`, it also draws that many action sequences around the plan as the planner draws
its samples and costs them both ways: MPPI only needs the model to ORDER candidates as the physics
does, so it records the rank correlation of predicted and simulated costs and where the model's
favourite lies among the candidates by simulated cost (0 = the physics' best, 0.5 = a random pick).
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
  """jit(states, u [E, K, Hp, >= width]) -> step costs, healthy [E, K, Hp] and totals [E, K]."""

  def one(s, u_kha):
    ctx = backend.context(s)
    lo, hi = backend.bounds(ctx)
    u = jnp.clip(u_kha[..., :width], lo, hi)
    cost_kh, healthy_kh, terminal_k = backend.step_costs(ctx, u)
    return cost_kh, healthy_kh, mppi_lib.total_costs(cost_kh, healthy_kh, terminal_k, cfg)

  return jax.jit(jax.vmap(one))


@functools.lru_cache(maxsize=None)
def _costers(planner: mppi_lib.MPPI, task: tasks_lib.Task, physics: str, candidates: int):
  """(predicted, simulated, candidate sampler) of a planner: one oracle and one compilation per
  planner, not per episode (a PlanCheck is made for every episode)."""
  oracle = physics_lib.make_oracle(task, physics)
  sampler = None
  if candidates > 1:
    sampler = mppi_lib.candidate_sampler(planner, task.act_low, task.act_high, candidates, planner.config.horizon)
  return (
    _coster(planner.backend, planner.config, planner.backend.action_dim),
    _coster(oracle, planner.config, oracle.action_dim),
    sampler,
  )


def _ranks(x: np.ndarray) -> np.ndarray:
  return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)


def rank_agreement(predicted_k: np.ndarray, simulated_k: np.ndarray) -> tuple[float, float]:
  """(Spearman correlation of the two costs, simulated-cost quantile of the predicted best candidate).

  The quantile is the share of candidates the physics rates strictly better than the model's pick."""
  rp, rs = _ranks(predicted_k), _ranks(simulated_k)
  corr = float(np.corrcoef(rp, rs)[0, 1]) if len(rp) > 1 else float("nan")
  pick = int(np.argmin(predicted_k))
  return corr, float(np.mean(simulated_k < simulated_k[pick]))


class PlanCheck:
  """Predicted (planner's backend) vs simulated (oracle) cost of each chosen plan, every `every` steps."""

  def __init__(
    self,
    planner: mppi_lib.MPPI,
    task: tasks_lib.Task,
    physics: str = "auto",
    every: int = 50,
    candidates: int = 0,
    seed: int = 0,
  ):
    if every < 1 or candidates < 0:
      raise ValueError(f"plan_check needs every >= 1 step and candidates >= 0, got {every}, {candidates}")
    self.every = int(every)
    self._predicted, self._simulated, self._sample = _costers(planner, task, physics, int(candidates))
    self._key = jax.random.key(seed)
    self.rows: list[dict] = []

  def __call__(self, t: int, s, u, plan) -> None:
    if t % self.every or not bool(jnp.all(s.alive)):
      return
    u_eha = jnp.concatenate([u[:, None], plan.mean[:, :-1]], axis=1)
    if self._sample is None:
      u_ekha = u_eha[:, None]
    else:  # candidate 0 is the chosen plan itself
      self._key, sub = jax.random.split(self._key)
      drawn = jax.vmap(self._sample)(jax.random.split(sub, u_eha.shape[0]), u_eha)
      u_ekha = drawn.at[:, 0].set(u_eha[..., : drawn.shape[-1]])
    pc, ph, pt = (np.asarray(x) for x in self._predicted(s, u_ekha))
    sc, sh, st = (np.asarray(x) for x in self._simulated(s, u_ekha))
    for e in range(u_eha.shape[0]):
      fell = not sh[e, 0].all()
      up = int(np.argmin(sh[e, 0])) + 1 if fell else sh.shape[2]  # steps up to the simulated fall
      row = {
        "step": int(t),
        "predicted_total": float(pt[e, 0]),
        "simulated_total": float(st[e, 0]),
        "step_cost_mae": float(np.mean(np.abs(pc[e, 0, :up] - sc[e, 0, :up]))),
        "predicted_fall": bool(not ph[e, 0].all()),
        "simulated_fall": fell,
      }
      if self._sample is not None:
        row["rank_corr"], row["pick_quantile"] = rank_agreement(pt[e], st[e])
        row["candidate_falls_predicted"] = float(np.mean(~ph[e].all(axis=1)))
        row["candidate_falls_simulated"] = float(np.mean(~sh[e].all(axis=1)))
      self.rows.append(row)

  def summary(self) -> dict:
    """Means over the checked plans (empty when none was checked)."""
    if not self.rows:
      return {}
    col = lambda k: np.array([r[k] for r in self.rows], np.float64)
    ranked = {}
    if "rank_corr" in self.rows[0]:
      ranked = {
        k: float(np.nanmean(col(k)))
        for k in ("rank_corr", "pick_quantile", "candidate_falls_predicted", "candidate_falls_simulated")
      }
    return {
      "plans": len(self.rows),
      "predicted_total": float(col("predicted_total").mean()),
      "simulated_total": float(col("simulated_total").mean()),
      "total_abs_error": float(np.abs(col("predicted_total") - col("simulated_total")).mean()),
      "step_cost_mae": float(col("step_cost_mae").mean()),
      "predicted_falls": float(col("predicted_fall").mean()),
      "simulated_falls": float(col("simulated_fall").mean()),
    } | ranked
