"""MPPI (model predictive path integral control) with a simulator-oracle or a world-model rollout.

One replanning step, for every environment at once (vmap), as ONE jitted function:
  for each iteration: sample K action sequences around the plan with temporally correlated noise
  (Ornstein-Uhlenbeck, knot-smoothed or white), clip to the action bounds, roll them out with the
  backend, weight them by softmax(-cost / lambda) and set the plan to the weighted mean;
  execute the plan's first action and warm-start the next step with the plan shifted by one.

The planner is written against control/backends.py's `Backend` (action_dim, bounds, context,
step_costs); its implementations are the simulator oracle (MJX, or C MuJoCo through a host
callback: control/mujoco_backend.py) and a world model. Its settings are `MPPIConfig`
(control/mppi_config.py).

Devices: with `mesh`, the samples axis is sharded over the mesh axis `axis` (NamedSharding), so
rollouts/predictions run data-parallel over devices and the weighted mean is an all-reduce.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from westworld_jax.control import tasks as tasks_lib
from westworld_jax.control.backends import Backend
from westworld_jax.control.mppi_config import MPPIConfig


class PlanState(NamedTuple):
  mean: jax.Array  # [Hp, Ca] the plan, actuator units
  key: jax.Array  # PRNG key


def sample_noise(key: jax.Array, cfg: MPPIConfig, shape_kha: tuple[int, int, int]) -> jax.Array:
  """Unit-variance noise [K, Hp, A], correlated in time per cfg.noise_kind."""
  k, h, a = shape_kha
  if cfg.noise_kind == "white":
    return jax.random.normal(key, shape_kha)
  if cfg.noise_kind == "smooth":
    n = min(cfg.knots, h) if h > 1 else 1
    z = jax.random.normal(key, (k, max(n, 2), a))
    grid = jnp.linspace(0.0, max(n, 2) - 1.0, h)
    lo = jnp.clip(jnp.floor(grid).astype(jnp.int32), 0, max(n, 2) - 2)
    frac = (grid - lo)[None, :, None]
    out = z[:, lo] * (1 - frac) + z[:, lo + 1] * frac
    # Interpolation shrinks the variance between knots; rescale to unit variance per step.
    return out / jnp.sqrt((1 - frac) ** 2 + frac**2)
  # Stationary OU / AR(1): x_t = c x_{t-1} + sqrt(1 - c^2) n_t, x_0 ~ N(0, 1).
  c = cfg.correlation
  z = jax.random.normal(key, (h, k, a))

  def ar(x, n):
    x = c * x + np.sqrt(1.0 - c * c) * n
    return x, x

  _, xs = jax.lax.scan(ar, z[0], z[1:])
  return jnp.moveaxis(jnp.concatenate([z[:1], xs], axis=0), 0, 1)


def mppi_weights(costs_k: jax.Array, cfg: MPPIConfig) -> jax.Array:
  """softmax(-(cost - min) / lambda); non-finite costs (diverged rollouts) get weight 0 (uniform
  weights if every rollout diverged, so the plan stays finite)."""
  finite = jnp.isfinite(costs_k)
  n = jnp.maximum(jnp.sum(finite), 1)
  c = jnp.where(finite, costs_k, 0.0)
  c = c - jnp.min(jnp.where(finite, c, jnp.inf))
  if cfg.normalize_costs:
    mean = jnp.sum(jnp.where(finite, c, 0.0)) / n
    spread = jnp.sqrt(jnp.sum(jnp.where(finite, c - mean, 0.0) ** 2) / n)
    c = c / (spread + 1e-6)
  logits = jnp.where(finite, -c / cfg.temperature, -jnp.inf)
  return jax.nn.softmax(jnp.where(jnp.any(finite), logits, 0.0))


def total_costs(cost_kh, healthy_kh, terminal_k, discount) -> jax.Array:
  return jax.vmap(functools.partial(tasks_lib.trajectory_cost, discount=discount))(cost_kh, healthy_kh, terminal_k)


def replan_one(backend: Backend, cfg: MPPIConfig, plan: PlanState, ctx: Any, sharding: NamedSharding | None = None):
  """One environment's replanning step -> (ctrl [Ca], next PlanState, info)."""
  lo, hi = backend.bounds(ctx)
  half = 0.5 * (hi - lo)
  K, Hp, A = cfg.samples, cfg.horizon, backend.action_dim
  key, iter_key = jax.random.split(plan.key)

  def iteration(mean, xs):
    k, scale = xs
    eps = sample_noise(k, cfg, (K, Hp, A)) * (cfg.noise * scale) * half
    if cfg.keep_mean:
      eps = eps.at[0].set(0.0)
    if sharding is not None:
      eps = jax.lax.with_sharding_constraint(eps, sharding)
    u = jnp.clip(mean[None] + eps, lo, hi)
    cost_kh, healthy_kh, terminal_k = backend.step_costs(ctx, u)
    costs = total_costs(cost_kh, healthy_kh, terminal_k, cfg.discount)
    w = mppi_weights(costs, cfg)
    new_mean = jnp.einsum("k,kha->ha", w, u)
    stats = {
      "cost_min": jnp.min(jnp.where(jnp.isfinite(costs), costs, jnp.inf)),
      "cost_mean": jnp.mean(jnp.where(jnp.isfinite(costs), costs, jnp.nan)),
      "cost_plan": costs[0],
      "ess": 1.0 / jnp.sum(w**2),
    }
    return new_mean, stats

  scales = jnp.asarray(cfg.noise_decay, jnp.float32) ** jnp.arange(cfg.iterations, dtype=jnp.float32)
  mean, stats = jax.lax.scan(iteration, plan.mean, (jax.random.split(iter_key, cfg.iterations), scales))
  info = {k: v[-1] for k, v in stats.items()}
  info["cost_first_iter_min"] = stats["cost_min"][0]
  ctrl = mean[0]
  shifted = jnp.concatenate([mean[1:], mean[-1:]], axis=0)
  return ctrl, PlanState(shifted, key), info


class MPPI:
  """Batched MPPI: `replan(plan [E], env_state [E]) -> (ctrl [E, Ca], plan, info)`, one jit.

  Args:
    backend: a Backend (OracleBackend, MujocoOracle or WorldModelBackend).
    config: MPPIConfig.
    mesh: optional device mesh; the samples axis is sharded over its axis `axis`.
  Attributes:
    trace_count: how many times replan was traced (1 after any number of same-shaped calls).
  """

  def __init__(self, backend: Backend, config: MPPIConfig, mesh: Mesh | None = None, axis: str = "samples"):
    self.backend, self.config, self.mesh = backend, config, mesh
    self.trace_count = 0
    sharding = None
    if mesh is not None:
      if axis not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}; MPPI shards samples over '{axis}'")
      if config.samples % mesh.shape[axis]:
        raise ValueError(
          f"samples={config.samples} must be divisible by the {mesh.shape[axis]} devices of mesh axis '{axis}'"
        )
      sharding = NamedSharding(mesh, P(axis))
    self._sharding = sharding

    def replan(plan, env_state):
      self.trace_count += 1  # Python side effect: runs only while tracing
      ctx = jax.vmap(backend.context)(env_state)
      # The mesh is visible while tracing, so a world model's scan kernel runs per shard of the
      # samples (shard_map: XLA cannot split a kernel call; see model/ssm.py) instead of replicated.
      with contextlib.nullcontext() if mesh is None else jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return jax.vmap(functools.partial(replan_one, backend, config, sharding=sharding))(plan, ctx)

    def init(key, env_state):
      ctx = jax.vmap(backend.context)(env_state)
      lo, hi = jax.vmap(backend.bounds)(ctx)
      mean = jnp.broadcast_to(jnp.clip(0.0, lo, hi)[:, None], (lo.shape[0], config.horizon, lo.shape[-1]))
      return PlanState(mean.astype(jnp.float32), jax.random.split(key, lo.shape[0]))

    self.replan = jax.jit(replan)
    self.init = jax.jit(init)
