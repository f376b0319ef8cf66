"""MPPI (model predictive path integral control) with a simulator-oracle or a world-model rollout.

One replanning step, for every environment at once (vmap), as ONE jitted function:
  for each iteration: sample K action sequences around the plan with temporally correlated noise
  (Ornstein-Uhlenbeck, knot-smoothed, white or AR(2)-filtered), clip to the action bounds, roll
  them out with the backend, weight them by softmax(-cost / lambda) and move the plan to the
  weighted mean; execute the plan's first action and warm-start the next step with the plan
  shifted by one. MPPIConfig's paper options (control/mppi_config.py) change the noise scale, the
  update, the cost of falls and the plan's start and tail (the expert's action statistics,
  `ExpertActions`).

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


class ExpertActions(NamedTuple):
  """An expert's action statistics per dimension (actuator units): the 'expert' init and tail."""

  mean: jax.Array  # [Ca]
  std: jax.Array  # [Ca]

  @classmethod
  def of(cls, actions: np.ndarray, dim: int | None = None) -> "ExpertActions":
    """From an episode's actions [T, A] (zero-padded to `dim` channels): mean and std + 1e-6."""
    a = np.asarray(actions, np.float64)
    pad = lambda x: np.pad(x, (0, (dim or a.shape[1]) - a.shape[1])).astype(np.float32)
    return cls(jnp.asarray(pad(a.mean(0))), jnp.asarray(pad(a.std(0) + 1e-6)))


def sample_noise(key: jax.Array, cfg: MPPIConfig, shape_kha: tuple[int, int, int]) -> jax.Array:
  """Noise [K, Hp, A] correlated in time per cfg.noise_kind: unit variance, except 'ar2' (the
  authors' filter of unit normals, whose variance the coefficients set)."""
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
  z = jax.random.normal(key, (h, k, a))
  if cfg.noise_kind == "ar2":
    return _ar2(z, cfg.filter_coeffs)
  # Stationary OU / AR(1): x_t = c x_{t-1} + sqrt(1 - c^2) n_t, x_0 ~ N(0, 1).
  c = cfg.correlation

  def ar(x, n):
    x = c * x + np.sqrt(1.0 - c * c) * n
    return x, x

  _, xs = jax.lax.scan(ar, z[0], z[1:])
  return jnp.moveaxis(jnp.concatenate([z[:1], xs], axis=0), 0, 1)


def _ar2(z, coeffs) -> jax.Array:
  """Unit normals z [Hp, K, A] -> [K, Hp, A] filtered as the authors do: steps 0 and 1 as drawn,
  then eps_t = b0 z_t + b1 eps_{t-1} + b2 eps_{t-2} (the filtered previous values: an AR(2)
  process, whose variance is not 1; (0.5, 0.5, 0) gives 1/3 and autocorrelation 0.5^lag)."""
  b0, b1, b2 = coeffs
  if z.shape[0] <= 2:
    return jnp.moveaxis(z, 0, 1)

  def ar(carry, n):
    prev, prev2 = carry
    x = b0 * n + b1 * prev + b2 * prev2
    return (x, prev), x

  _, xs = jax.lax.scan(ar, (z[1], z[0]), z[2:])
  return jnp.moveaxis(jnp.concatenate([z[:2], xs], axis=0), 0, 1)


def noise_std(cfg: MPPIConfig, lo: jax.Array, hi: jax.Array, expert: ExpertActions | None) -> jax.Array | None:
  """Per-dimension noise std [Ca] in actuator units, or None for the default (cfg.noise times
  each action's half-range). Padded channels (lo == hi) get none."""
  if cfg.init == "expert":
    std = jnp.sqrt(jnp.maximum(expert.std**2 * cfg.expert_cov_scale, 1e-6))
  elif cfg.covariance > 0:
    std = jnp.full(lo.shape, np.sqrt(cfg.covariance), jnp.float32)
  else:
    return None
  return jnp.where(hi > lo, std, 0.0)


def fall_costs(cost_kh, healthy_kh, terminal_k, cfg: MPPIConfig) -> jax.Array:
  """Totals [K] with the authors' fall handling: the step that falls costs fall_penalty more per
  remaining step, and later steps repeat that cost (hold_after_fall) or count nothing."""
  h = cost_kh.shape[1]
  healthy = healthy_kh.astype(jnp.float32)
  alive_after = jnp.cumprod(healthy, axis=1)
  alive_before = jnp.concatenate([jnp.ones_like(alive_after[:, :1]), alive_after[:, :-1]], axis=1)
  falls = alive_before * (1.0 - healthy)  # one-hot at the falling step, if any
  remain = (h - 1 - jnp.arange(h)).astype(jnp.float32)
  step = alive_before * cost_kh + cfg.fall_penalty * falls * remain
  if cfg.hold_after_fall:
    step = step + (1.0 - alive_before) * jnp.sum(falls * (cost_kh + cfg.fall_penalty * remain), 1, keepdims=True)
  g = jnp.asarray(cfg.discount, jnp.float32) ** jnp.arange(h + 1, dtype=jnp.float32)
  return jnp.sum(g[:-1] * step, axis=1) + g[-1] * alive_after[:, -1] * terminal_k


def control_costs(mean: jax.Array, eps: jax.Array, std: jax.Array) -> jax.Array:
  """[K]: 0.5 sum_t mean_t' Sigma^-1 (mean_t + 2 eps_t), Sigma = diag(std^2) (padded channels 0)."""
  inv = jnp.where(std > 0, 1.0 / jnp.maximum(std, 1e-12) ** 2, 0.0)
  return 0.5 * jnp.sum((mean * inv)[None] * (mean[None] + 2.0 * eps), axis=(1, 2))


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


def total_costs(cost_kh, healthy_kh, terminal_k, cfg: MPPIConfig) -> jax.Array:
  if cfg.fall_penalty or cfg.hold_after_fall:
    return fall_costs(cost_kh, healthy_kh, terminal_k, cfg)
  return jax.vmap(functools.partial(tasks_lib.trajectory_cost, discount=cfg.discount))(cost_kh, healthy_kh, terminal_k)


def perturbations(key, cfg: MPPIConfig, shape_kha, std, half, scale) -> jax.Array:
  """The noise eps [K, Hp, Ca] added to the plan: unit noise times std (or cfg.noise x half-range)."""
  z = sample_noise(key, cfg, shape_kha)
  eps = z * (cfg.noise * scale) * half if std is None else z * (scale * std)
  return eps.at[0].set(0.0) if cfg.keep_mean else eps


def candidate_sampler(planner: "MPPI", low, high, count: int, horizon: int):
  """jit(key, plan [>= horizon, >= Ca]) -> [count, horizon, Ca]: action sequences drawn around a plan as
  the planner draws its candidates (its noise process and spread), clipped to [low, high]."""
  cfg, nu = planner.config, len(low)
  lo, hi = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
  std = noise_std(cfg, lo, hi, planner.expert)

  def sample(key, plan_ha):
    eps = perturbations(key, cfg, (count, horizon, nu), std, 0.5 * (hi - lo), 1.0)
    return jnp.clip(plan_ha[None, :horizon, :nu] + eps, lo, hi)

  return jax.jit(sample)


def replan_one(
  backend: Backend,
  cfg: MPPIConfig,
  plan: PlanState,
  ctx: Any,
  sharding: NamedSharding | None = None,
  expert: ExpertActions | None = None,
):
  """One environment's replanning step -> (ctrl [Ca], next PlanState, info)."""
  lo, hi = backend.bounds(ctx)
  half = 0.5 * (hi - lo)
  std = noise_std(cfg, lo, hi, expert)
  K, Hp, A = cfg.samples, cfg.horizon, backend.action_dim
  key, iter_key = jax.random.split(plan.key)

  def iteration(mean, xs):
    k, scale = xs
    eps = perturbations(k, cfg, (K, Hp, A), std, half, scale)
    if sharding is not None:
      eps = jax.lax.with_sharding_constraint(eps, sharding)
    u_raw = mean[None] + eps
    u = jnp.clip(u_raw, lo, hi)
    cost_kh, healthy_kh, terminal_k = backend.step_costs(ctx, u)
    costs = total_costs(cost_kh, healthy_kh, terminal_k, cfg)
    if cfg.control_cost:
      costs = costs + cfg.temperature * control_costs(mean, eps, half * cfg.noise if std is None else std)
    w = mppi_weights(costs, cfg)
    new_mean = jnp.einsum("k,kha->ha", w, u if cfg.update_clipped else u_raw)
    if cfg.step_size < 1.0:
      new_mean = (1.0 - cfg.step_size) * mean + cfg.step_size * new_mean
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
  last = mean[-1]
  if cfg.tail == "expert":
    key, tail_key = jax.random.split(key)
    spread = expert.std * np.sqrt(cfg.expert_cov_scale)
    last = jnp.where(hi > lo, expert.mean + spread * jax.random.normal(tail_key, last.shape), 0.0)
  shifted = jnp.concatenate([mean[1:], last[None]], axis=0)
  return ctrl, PlanState(shifted, key), info


def per_env(fn, *args):
  """jax.vmap(fn)(*args) over the leading environment axis; one environment calls fn directly.

  Same values; but a vmapped world model's token-by-token decoding (TDM's scan over a KV cache)
  runs ~5x slower on a CPU than the unbatched one (measured at 64 x 24), and closed-loop control
  mostly plans for one environment.
  """
  if jax.tree.leaves(args)[0].shape[0] != 1:
    return jax.vmap(fn)(*args)
  out = fn(*jax.tree.map(lambda x: x[0], args))
  return jax.tree.map(lambda x: x[None], out)


class MPPI:
  """Batched MPPI: `replan(plan [E], env_state [E]) -> (ctrl [E, Ca], plan, info)`, one jit.

  Args:
    backend: a Backend (OracleBackend, MujocoOracle or WorldModelBackend).
    config: MPPIConfig.
    mesh: optional device mesh; the samples axis is sharded over its axis `axis`.
    expert: the expert's action statistics, which config.init / config.tail 'expert' need.
  Attributes:
    trace_count: how many times replan was traced (1 after any number of same-shaped calls).
  """

  def __init__(
    self,
    backend: Backend,
    config: MPPIConfig,
    mesh: Mesh | None = None,
    axis: str = "samples",
    expert: ExpertActions | None = None,
  ):
    self.backend, self.config, self.mesh, self.expert = backend, config, mesh, expert
    self.trace_count = 0
    if config.uses_expert and expert is None:
      raise ValueError(
        f"MPPI init '{config.init}' / tail '{config.tail}' needs the expert's action statistics: "
        "plan with a reference episode (config reference) or set mppi.init='zero', mppi.tail='repeat'"
      )
    if expert is not None and expert.mean.shape != (backend.action_dim,):
      raise ValueError(f"expert actions have {expert.mean.shape} dims, the backend plans {backend.action_dim}")
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
        one = functools.partial(replan_one, backend, config, sharding=sharding, expert=expert)
        return per_env(one, plan, ctx)

    def init(key, env_state):
      ctx = jax.vmap(backend.context)(env_state)
      lo, hi = jax.vmap(backend.bounds)(ctx)
      start = jnp.where(hi > lo, expert.mean, 0.0) if config.init == "expert" else jnp.clip(0.0, lo, hi)
      mean = jnp.broadcast_to(start[:, None], (lo.shape[0], config.horizon, lo.shape[-1]))
      return PlanState(mean.astype(jnp.float32), jax.random.split(key, lo.shape[0]))

    self.replan = jax.jit(replan)
    self.init = jax.jit(init)
