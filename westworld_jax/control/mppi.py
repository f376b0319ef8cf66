"""MPPI (model predictive path integral control) with a simulator-oracle or a world-model rollout.

One replanning step, for every environment at once (vmap), as ONE jitted function:
  for each iteration: sample K action sequences around the plan with temporally correlated noise
  (Ornstein-Uhlenbeck, knot-smoothed or white), clip to the action bounds, roll them out with the
  backend, weight them by softmax(-cost / lambda) and set the plan to the weighted mean;
  execute the plan's first action and warm-start the next step with the plan shifted by one.

Backends (duck-typed; see `OracleBackend`, `WorldModelBackend`):
  action_dim                          padded action channels Ca
  bounds(ctx) -> (lo [Ca], hi [Ca])   actuator units; padded channels have lo = hi = 0
  context(env_state) -> ctx           what a rollout starts from (env.EnvState -> pytree)
  step_costs(ctx, U [K, Hp, Ca]) -> (cost [K, Hp], healthy [K, Hp], terminal [K])
The oracle steps MJX (vmap over samples of a lax.scan of mjx.step); the world model predicts the
whole horizon of every sample in ONE `predict` call from the last H observed steps and the sampled
actions (BATCH_SPEC.md), and the task's observation cost is applied to the de-normalised prediction.

Devices: with `mesh`, the samples axis is sharded over the mesh axis `axis` (NamedSharding), so
rollouts/predictions run data-parallel over devices and the weighted mean is an all-reduce.
"""
from __future__ import annotations

import dataclasses
import contextlib
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from westworld_jax.control import tasks as tasks_lib

NOISE_KINDS = ("ou", "smooth", "white")


@dataclasses.dataclass(frozen=True)
class MPPIConfig:
  samples: int = 256  # K action sequences per environment and iteration
  horizon: int = 100  # Hp control steps
  iterations: int = 1  # sample-and-reweight rounds per control step
  noise: float = 0.3  # noise std as a fraction of each action's half-range
  noise_kind: str = "ou"  # 'ou' | 'smooth' | 'white'
  correlation: float = 0.9  # 'ou': noise autocorrelation between consecutive steps
  knots: int = 8  # 'smooth': independent noise at this many knots, linearly interpolated
  temperature: float = 0.1  # lambda
  normalize_costs: bool = True  # lambda relative to the std of the sample costs (scale-free)
  discount: float = 1.0
  noise_decay: float = 0.5  # noise multiplier per extra iteration
  keep_mean: bool = True  # sample 0 is the plan itself (the warm start can only improve)

  def __post_init__(self):
    if self.samples < 2 or self.horizon < 1 or self.iterations < 1:
      raise ValueError(f"MPPI needs samples >= 2, horizon >= 1, iterations >= 1; got samples={self.samples}, "
                       f"horizon={self.horizon}, iterations={self.iterations}")
    if self.noise_kind not in NOISE_KINDS:
      raise ValueError(f"noise_kind '{self.noise_kind}' unknown: choose one of {NOISE_KINDS}")
    if not 0.0 <= self.correlation < 1.0:
      raise ValueError(f"correlation must be in [0, 1), got {self.correlation}")
    if self.temperature <= 0 or self.noise < 0:
      raise ValueError(f"temperature must be > 0 and noise >= 0, got {self.temperature}, {self.noise}")
    if self.knots < 2:
      raise ValueError(f"knots must be >= 2, got {self.knots}")

  @classmethod
  def from_dict(cls, d) -> "MPPIConfig":
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown MPPI config keys {sorted(unknown)}; known: {sorted(known)}")
    return cls(**d)


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
    return out / jnp.sqrt((1 - frac)**2 + frac**2)
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
    spread = jnp.sqrt(jnp.sum(jnp.where(finite, c - mean, 0.0)**2) / n)
    c = c / (spread + 1e-6)
  logits = jnp.where(finite, -c / cfg.temperature, -jnp.inf)
  return jax.nn.softmax(jnp.where(jnp.any(finite), logits, 0.0))


def total_costs(cost_kh, healthy_kh, terminal_k, discount) -> jax.Array:
  return jax.vmap(functools.partial(tasks_lib.trajectory_cost, discount=discount))(cost_kh, healthy_kh, terminal_k)


def replan_one(backend, cfg: MPPIConfig, plan: PlanState, ctx: Any, sharding: NamedSharding | None = None):
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
    stats = {"cost_min": jnp.min(jnp.where(jnp.isfinite(costs), costs, jnp.inf)),
             "cost_mean": jnp.mean(jnp.where(jnp.isfinite(costs), costs, jnp.nan)),
             "cost_plan": costs[0], "ess": 1.0 / jnp.sum(w**2)}
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
    backend: OracleBackend or WorldModelBackend.
    config: MPPIConfig.
    mesh: optional device mesh; the samples axis is sharded over its axis `axis`.
  Attributes:
    trace_count: how many times replan was traced (1 after any number of same-shaped calls).
  """

  def __init__(self, backend, config: MPPIConfig, mesh: Mesh | None = None, axis: str = "samples"):
    self.backend, self.config, self.mesh = backend, config, mesh
    self.trace_count = 0
    sharding = None
    if mesh is not None:
      if axis not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}; MPPI shards samples over '{axis}'")
      if config.samples % mesh.shape[axis]:
        raise ValueError(f"samples={config.samples} must be divisible by the {mesh.shape[axis]} devices of "
                         f"mesh axis '{axis}'")
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


# --- oracle: MJX ----------------------------------------------------------------------------------

class OracleContext(NamedTuple):
  d: Any  # mjx.Data
  goal: jax.Array


class OracleBackend:
  """Rollouts in MJX from the environment's true state (the upper bound a world model can reach)."""
  kind = "oracle"
  history = 1  # the oracle needs no observation history

  def __init__(self, task: tasks_lib.Task):
    self.task = task
    self.action_dim = task.num_act

  def context(self, env_state) -> OracleContext:
    return OracleContext(env_state.d, env_state.goal)

  def bounds(self, ctx):
    del ctx
    return jnp.asarray(self.task.act_low), jnp.asarray(self.task.act_high)

  def rollout(self, ctx: OracleContext, u_ha: jax.Array):
    task = self.task

    def step(d, u):
      d = task.step(d, u)
      c, h = task.state_cost(d, u, ctx.goal)
      return d, (c, h)

    d, (c, h) = jax.lax.scan(step, ctx.d, u_ha)
    return c.astype(jnp.float32), h, task.state_terminal_cost(d, ctx.goal).astype(jnp.float32)

  def step_costs(self, ctx, u_kha):
    return jax.vmap(self.rollout, in_axes=(None, 0))(ctx, u_kha)


# --- world model ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Normaliser:
  """Per-channel min-max to [0, 1], clipped; constant channels -> 0.5 (as data/pipeline.py)."""
  obs_min: np.ndarray
  obs_max: np.ndarray
  act_min: np.ndarray
  act_max: np.ndarray

  @classmethod
  def from_stats(cls, stats: dict, num_obs: int | None = None, num_act: int | None = None,
                 where: str = "stats") -> "Normaliser":
    missing = {"obs_min", "obs_max", "act_min", "act_max"} - set(stats)
    if missing:
      raise ValueError(f"{where}: normalisation stats lack {sorted(missing)} (expected a corpus "
                       "metadata['stats'] dict)")
    n = cls(*(np.asarray(stats[k], np.float32) for k in ("obs_min", "obs_max", "act_min", "act_max")))
    if num_obs is not None and (len(n.obs_min) != num_obs or len(n.act_min) != num_act):
      raise ValueError(f"{where}: stats have {len(n.obs_min)} obs / {len(n.act_min)} act channels but the "
                       f"robot has {num_obs} / {num_act}: the stats belong to another robot")
    return n


def _span(lo, hi):
  span = hi - lo
  return np.where(span > 1e-8, span, 0.0).astype(np.float32)


def normalise(x, lo, span):
  """Physical -> [0, 1]; span 0 marks a constant channel (-> 0.5)."""
  safe = jnp.where(span > 0, span, 1.0)
  return jnp.where(span > 0, jnp.clip((x - lo) / safe, 0.0, 1.0), 0.5)


def denormalise(v, lo, span):
  return lo + v * span


class HistoryView(NamedTuple):
  """What the world-model backend reads of an EnvState (stackable across robots)."""
  obs_hist: jax.Array
  act_hist: jax.Array
  goal: jax.Array
  robot: jax.Array


class WMContext(NamedTuple):
  robot: jax.Array  # int32 index into the backend's tasks
  obs_hist: jax.Array  # [H, Co] physical units, last = current observation; padded channels 0
  act_hist: jax.Array  # [H-1, Ca] actions applied after obs_hist[:-1]
  goal: jax.Array


def _pad_last(x, n):
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


class WorldModelBackend:
  """Rollouts in a world model: the whole horizon of all samples from one `predict` call.

  Args:
    world_model: a registry.WorldModel (predict(params, batch) -> pred [B, T, Co]).
    params: its parameters.
    tasks: the robots (tasks) this backend plans for; environments name theirs by index
      (`EnvState.robot`), so robots with different channel counts share one batch, padded.
    normalisers: one per task, the normalisation the model was trained with for that robot.
    horizon: planning horizon Hp; the model sees T = history + Hp steps (<= its max_steps).
    obs_pad / act_pad: padded channel counts (default: the largest robot's).
    sample_chunk: predict at most this many samples at once (lax.map over chunks; bounds memory).
  """
  kind = "world_model"

  def __init__(self, world_model, params, tasks: Sequence[tasks_lib.Task], normalisers: Sequence[Normaliser],
               horizon: int, obs_pad: int | None = None, act_pad: int | None = None, sample_chunk: int = 0):
    tasks, normalisers = list(tasks), list(normalisers)
    if not tasks or len(tasks) != len(normalisers):
      raise ValueError(f"need one normaliser per task, got {len(tasks)} tasks and {len(normalisers)} normalisers")
    cfg = world_model.config
    self.world_model, self.params, self.tasks = world_model, params, tasks
    self.history = int(world_model.history)
    self.horizon = int(horizon)
    self.T = self.history + self.horizon
    max_steps = getattr(cfg, "max_steps", self.T)
    if self.T > max_steps:
      raise ValueError(f"history {self.history} + MPPI horizon {self.horizon} = {self.T} steps exceeds the world "
                       f"model's max_steps={max_steps}: shorten mppi.horizon to <= {max_steps - self.history}")
    self.obs_pad = obs_pad or max(t.num_obs for t in tasks)
    self.act_pad = act_pad or max(t.num_act for t in tasks)
    self.action_dim = self.act_pad
    for t in tasks:
      if t.num_obs > self.obs_pad or t.num_act > self.act_pad:
        raise ValueError(f"task '{t.name}' has {t.num_obs} obs / {t.num_act} act channels, more than the padding "
                         f"{self.obs_pad} / {self.act_pad}")
    limits = {"max_obs_channels": self.obs_pad, "max_act_channels": self.act_pad}
    for field, need in limits.items():
      if hasattr(cfg, field) and need > getattr(cfg, field):
        raise ValueError(f"the world model supports {field}={getattr(cfg, field)} but {need} are needed: use a "
                         "bigger model size or fewer channels")
    for t in tasks:
      mb = getattr(cfg, "max_bodies", None)
      if mb is not None and max(t.robot.obs_struct().max(initial=0), t.robot.act_struct().max(initial=0)) >= mb:
        raise ValueError(f"robot '{t.robot.name}' has more bodies than the world model's max_bodies={mb}")
    for t, n in zip(tasks, normalisers):
      if len(n.obs_min) != t.num_obs or len(n.act_min) != t.num_act:
        raise ValueError(f"normaliser for task '{t.name}' has {len(n.obs_min)} obs / {len(n.act_min)} act channels,"
                         f" the robot {t.num_obs} / {t.num_act}: pass the stats of this robot's environment")
    self.sample_chunk = int(sample_chunk)
    co, ca = self.obs_pad, self.act_pad
    pad = lambda a, n, v=0: np.pad(np.asarray(a), [(0, n - len(a))] + [(0, 0)] * (np.ndim(a) - 1), constant_values=v)
    r = [t.robot for t in tasks]
    self._static = {
        "obs_mask": np.stack([np.arange(co) < t.num_obs for t in tasks]),
        "act_mask": np.stack([np.arange(ca) < t.num_act for t in tasks]),
        "obs_struct": np.stack([pad(x.obs_struct(), co) for x in r]).astype(np.int32),
        "act_struct": np.stack([pad(x.act_struct(), ca) for x in r]).astype(np.int32),
        "obs_kind": np.stack([pad(x.obs_kinds(), co) for x in r]).astype(np.int32),
        "act_kind": np.stack([pad(x.act_kinds(), ca) for x in r]).astype(np.int32),
    }
    self._obs_lo = np.stack([pad(n.obs_min, co) for n in normalisers])
    self._obs_span = np.stack([pad(_span(n.obs_min, n.obs_max), co) for n in normalisers])
    self._act_lo = np.stack([pad(n.act_min, ca) for n in normalisers])
    self._act_span = np.stack([pad(_span(n.act_min, n.act_max), ca) for n in normalisers])
    self._bound_lo = np.stack([pad(t.act_low, ca) for t in tasks]).astype(np.float32)
    self._bound_hi = np.stack([pad(t.act_high, ca) for t in tasks]).astype(np.float32)

  def context(self, env_state) -> WMContext:
    obs_hist = env_state.obs_hist[-self.history:]
    act_hist = env_state.act_hist[env_state.act_hist.shape[0] - (self.history - 1):]
    if obs_hist.shape[0] != self.history:
      raise ValueError(f"the environment keeps {obs_hist.shape[0]} observations of history, the world model needs "
                       f"{self.history}: create the environments with history={self.history}")
    return WMContext(jnp.asarray(env_state.robot, jnp.int32), _pad_last(obs_hist, self.obs_pad),
                     _pad_last(act_hist, self.act_pad), env_state.goal)

  def bounds(self, ctx: WMContext):
    return jnp.asarray(self._bound_lo)[ctx.robot], jnp.asarray(self._bound_hi)[ctx.robot]

  def stack_states(self, states: Sequence[Any]) -> "HistoryView":
    """One batch from EnvStates of different robots: histories padded to the backend's channels.

    MJX states of different robots cannot be stacked, and the world model does not need them.
    """
    pad = lambda x, n: _pad_last(x, n)
    return HistoryView(
        obs_hist=jnp.concatenate([pad(s.obs_hist[:, -self.history:], self.obs_pad) for s in states]),
        act_hist=jnp.concatenate([pad(s.act_hist[:, s.act_hist.shape[1] - (self.history - 1):], self.act_pad)
                                  for s in states]),
        goal=jnp.concatenate([s.goal for s in states]), robot=jnp.concatenate([s.robot for s in states]))

  def batch(self, ctx: WMContext, u_kha: jax.Array) -> dict:
    """The model batch (BATCH_SPEC.md) for K sampled action sequences [K, Hp, Ca]."""
    K, H, T = u_kha.shape[0], self.history, self.T
    r = ctx.robot
    obs_mask = jnp.asarray(self._static["obs_mask"])[r]
    act_mask = jnp.asarray(self._static["act_mask"])[r]
    obs_lo, obs_span = jnp.asarray(self._obs_lo)[r], jnp.asarray(self._obs_span)[r]
    act_lo, act_span = jnp.asarray(self._act_lo)[r], jnp.asarray(self._act_span)[r]
    hist = jnp.where(obs_mask, normalise(ctx.obs_hist, obs_lo, obs_span), 0.0)  # [H, Co]
    obs = jnp.zeros((K, T, self.obs_pad), jnp.float32).at[:, :H].set(hist[None])
    # act[t] follows obs[t]: H-1 applied actions, then the plan; the last slot (after the final
    # predicted observation) cannot influence predictions and repeats the last planned action.
    past = jnp.broadcast_to(ctx.act_hist[None], (K, H - 1, self.act_pad))
    act = jnp.concatenate([past, u_kha, u_kha[:, -1:]], axis=1)
    act = jnp.where(act_mask, normalise(act, act_lo, act_span), 0.0)
    bcast = lambda x: jnp.broadcast_to(x[None], (K,) + x.shape)
    return {
        "obs": obs, "act": act.astype(jnp.float32),
        "obs_mask": bcast(obs_mask), "act_mask": bcast(act_mask),
        "time_mask": jnp.ones((K, T), bool),
        "obs_struct": bcast(jnp.asarray(self._static["obs_struct"])[r]),
        "act_struct": bcast(jnp.asarray(self._static["act_struct"])[r]),
        "obs_kind": bcast(jnp.asarray(self._static["obs_kind"])[r]),
        "act_kind": bcast(jnp.asarray(self._static["act_kind"])[r]),
        "env_id": jnp.zeros((K,), jnp.int32),
    }

  def predict(self, ctx: WMContext, u_kha: jax.Array) -> jax.Array:
    """Predicted future observations [K, Hp, Co] in physical units (padded channels 0)."""
    K = u_kha.shape[0]
    chunk = self.sample_chunk
    if chunk and K > chunk:
      if K % chunk:
        raise ValueError(f"samples={K} must be divisible by wm sample_chunk={chunk}")
      u = u_kha.reshape(K // chunk, chunk, *u_kha.shape[1:])
      pred = jax.lax.map(lambda uc: self.world_model.predict(self.params, self.batch(ctx, uc)), u)
      pred = pred.reshape(K, *pred.shape[2:])
    else:
      pred = self.world_model.predict(self.params, self.batch(ctx, u_kha))
    r = ctx.robot
    fut = pred[:, self.history:].astype(jnp.float32)
    obs_lo, obs_span = jnp.asarray(self._obs_lo)[r], jnp.asarray(self._obs_span)[r]
    mask = jnp.asarray(self._static["obs_mask"])[r]
    return jnp.where(mask, denormalise(jnp.clip(fut, 0.0, 1.0), obs_lo, obs_span), 0.0)

  def _task_costs(self, task, fut_khc, u_kha, goal):
    obs = fut_khc[..., :task.num_obs]
    u = u_kha[..., :task.num_act]
    c, h = jax.vmap(jax.vmap(task.cost, in_axes=(0, 0, None)), in_axes=(0, 0, None))(obs, u, goal)
    term = jax.vmap(task.terminal_cost, in_axes=(0, None))(obs[:, -1], goal)
    return c.astype(jnp.float32), h.astype(bool), term.astype(jnp.float32)

  def step_costs(self, ctx: WMContext, u_kha: jax.Array):
    fut = self.predict(ctx, u_kha)
    if len(self.tasks) == 1:
      return self._task_costs(self.tasks[0], fut, u_kha, ctx.goal)
    branches = [functools.partial(self._task_costs, t) for t in self.tasks]
    return jax.lax.switch(ctx.robot, branches, fut, u_kha, ctx.goal)
