"""MPPI rollout backends: the contract control/mppi.py plans with, the simulator oracle (MJX) and a world model.

`Backend` is that contract (an abstract base class): a backend turns an environment state into a
rollout context, gives the action bounds, and costs K sampled action sequences over the horizon.
The MJX oracle steps MJX (vmap over samples of a lax.scan of mjx.step); its C MuJoCo twin, for
CPUs, is control/mujoco_backend.py's MujocoOracle. The world model predicts the whole horizon of
every sample in ONE `predict` call from the last H observed steps and the sampled actions
(BATCH_SPEC.md). Every backend applies the task's observation costs (`observation_costs`), with
the task's reference-tracking term at the episode step each rollout step reaches (every context
carries the environment's step count).
"""

from __future__ import annotations

import abc
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from mujoco import mjx
import numpy as np

from westworld_jax.control import tasks as tasks_lib
from westworld_jax.data import normalise, padding
from westworld_jax.model.batch import robot_batch


class Backend(abc.ABC):
  """What MPPI's replanning step calls (control/mppi.py); every method sees one environment (vmapped)."""

  @property
  @abc.abstractmethod
  def kind(self) -> str:
    """Names the planner in logs and summaries ('oracle', 'world_model')."""

  @property
  @abc.abstractmethod
  def history(self) -> int:
    """Observations (and history - 1 applied actions) the environments must keep (env.Envs)."""

  @property
  @abc.abstractmethod
  def action_dim(self) -> int:
    """Padded action channels Ca of the sampled action sequences."""

  @abc.abstractmethod
  def context(self, env_state) -> Any:
    """What a rollout starts from: an env.EnvState -> a pytree."""

  @abc.abstractmethod
  def bounds(self, ctx) -> tuple[jax.Array, jax.Array]:
    """(lo [Ca], hi [Ca]) in actuator units; padded channels have lo = hi = 0."""

  @abc.abstractmethod
  def step_costs(self, ctx, u_kha: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(cost [K, Hp], healthy [K, Hp], terminal [K]) of K action sequences u_kha [K, Hp, Ca]."""


def observation_costs(task: tasks_lib.Task, obs_kho: jax.Array, u_kha: jax.Array, goal: jax.Array, step=0):
  """(cost [K, Hp], healthy [K, Hp], terminal [K]) of observed rollouts obs [K, Hp, >= num_obs]
  reached by actions u [K, Hp, >= num_act] from episode step `step`: the task's cost on each step
  plus, with a reference, its tracking cost at phase step + t (the authors' indexing: the state
  after the episode's step n is compared with reference row n), and its terminal cost on the last.
  A task variant that does not terminate (Task.variant) is healthy throughout."""
  obs, u = obs_kho[..., : task.num_obs], u_kha[..., : task.num_act]
  c, h = jax.vmap(jax.vmap(task.cost, in_axes=(0, 0, None)), in_axes=(0, 0, None))(obs, u, goal)
  if task.reference is not None:
    phase = jnp.asarray(step, jnp.int32) + jnp.arange(obs.shape[1], dtype=jnp.int32)
    c = c + jax.vmap(jax.vmap(task.reference.cost), in_axes=(0, None))(obs, phase)
  if not task.terminates:
    h = jnp.ones_like(h)
  term = jax.vmap(task.terminal_cost, in_axes=(0, None))(obs[:, -1], goal)
  return c.astype(jnp.float32), h.astype(bool), term.astype(jnp.float32)


# --- oracle: MJX ----------------------------------------------------------------------------------


class OracleContext(NamedTuple):
  d: Any  # mjx.Data
  goal: jax.Array
  step: Any = 0  # int32: the environment's episode step (the reference cost's phase)


class OracleBackend(Backend):
  """Rollouts in MJX from the environment's true state (the upper bound a world model can reach)."""

  kind = "oracle"
  physics = "mjx"
  history = 1  # the oracle needs no observation history

  def __init__(self, task: tasks_lib.Task):
    self.task = task

  @property
  def action_dim(self) -> int:
    return self.task.num_act

  def context(self, env_state) -> OracleContext:
    if not isinstance(env_state.d, mjx.Data):
      raise TypeError(
        "the MJX oracle plans from MJX environments (their EnvState.d is an mjx.Data): "
        "make both with the same physics (control/physics.py)"
      )
    return OracleContext(env_state.d, env_state.goal, env_state.steps)

  def bounds(self, ctx):
    del ctx
    return jnp.asarray(self.task.act_low), jnp.asarray(self.task.act_high)

  def rollout(self, ctx: OracleContext, u_ha: jax.Array) -> jax.Array:
    """Observations [Hp, num_obs] after each step of one action sequence."""
    task = self.task

    def step(d, u):
      d = task.step(d, u)
      return d, task.observe(d)

    return jax.lax.scan(step, ctx.d, u_ha)[1]

  def step_costs(self, ctx, u_kha):
    obs = jax.vmap(self.rollout, in_axes=(None, 0))(ctx, u_kha)
    return observation_costs(self.task, obs, u_kha, ctx.goal, ctx.step)


# --- world model ----------------------------------------------------------------------------------


class HistoryView(NamedTuple):
  """What the world-model backend reads of an EnvState (stackable across robots)."""

  obs_hist: jax.Array
  act_hist: jax.Array
  goal: jax.Array
  robot: jax.Array
  steps: jax.Array


class WMContext(NamedTuple):
  robot: jax.Array  # int32 index into the backend's tasks
  obs_hist: jax.Array  # [H, Co] physical units, last = current observation; padded channels 0
  act_hist: jax.Array  # [H-1, Ca] actions applied after obs_hist[:-1]
  goal: jax.Array
  step: Any = 0  # int32: the environment's episode step (the reference cost's phase)


def _pad_last(x, n):
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def check_fits(world_model, task, segment: int, obs_pad: int = 0, act_pad: int = 0) -> None:
  """CapacityError unless the model takes the task's robot (padded to obs_pad / act_pad channels) in
  windows of its history + `segment` planned steps: what planning needs, checkable before any episode."""
  obs_pad, act_pad = obs_pad or task.num_obs, act_pad or task.num_act
  world_model.check_robot_of(
    task.robot,
    f"robot '{task.robot.name}' (padded to {obs_pad} / {act_pad} obs / action channels, "
    f"history {world_model.history} + {segment} planned steps per window)",
    "plan with a world model of a larger {field} (or, for max_window_len, a shorter mppi.horizon or wm_segment)",
    num_obs=obs_pad,
    num_act=act_pad,
    window_len=world_model.history + segment,
  )


class WorldModelBackend(Backend):
  """Rollouts in a world model: the whole horizon of all samples from one `predict` call (the
  authors' way), or, with `segment`, chained windows for a horizon longer than the model's window.

  Args:
    world_model: a registry.WorldModel (predict(params, batch) -> pred [B, T, Co]).
    params: its parameters.
    tasks: the robots (tasks) this backend plans for; environments name theirs by index
      (`EnvState.robot`), so robots with different channel counts share one batch, padded.
    normalisers: one per task, the normalisation the model was trained with for that robot.
    horizon: planning horizon Hp; the model sees T = history + Hp steps (<= its max_window_len).
    obs_pad / act_pad: padded channel counts (default: the largest robot's).
    sample_chunk: predict at most this many samples at once (lax.map over chunks; bounds memory).
    segment: 0 = the whole horizon in one window of history + Hp steps; > 0 = predict at most this
      many steps per window and chain the windows, each conditioned on the last `history` steps of
      the one before (observed, then predicted): a horizon beyond the model's max_window_len.
  """

  kind = "world_model"

  def __init__(
    self,
    world_model,
    params,
    tasks: Sequence[tasks_lib.Task],
    normalisers: Sequence[normalise.Normaliser],
    horizon: int,
    obs_pad: int | None = None,
    act_pad: int | None = None,
    sample_chunk: int = 0,
    segment: int = 0,
  ):
    tasks, normalisers = list(tasks), list(normalisers)
    if not tasks or len(tasks) != len(normalisers):
      raise ValueError(f"need one normaliser per task, got {len(tasks)} tasks and {len(normalisers)} normalisers")
    self.world_model, self.params, self.tasks = world_model, params, tasks
    self._history = int(world_model.history)
    self.horizon = int(horizon)
    if segment < 0:
      raise ValueError(f"segment must be >= 0 (0 = the whole horizon in one window), got {segment}")
    self.segment = min(int(segment), self.horizon) if segment else self.horizon
    self.T = self.history + self.segment  # the window the model sees
    self.obs_pad = obs_pad or max(t.num_obs for t in tasks)
    self.act_pad = act_pad or max(t.num_act for t in tasks)
    for t in tasks:
      if t.num_obs > self.obs_pad or t.num_act > self.act_pad:
        raise ValueError(
          f"task '{t.name}' has {t.num_obs} obs / {t.num_act} act channels, more than the padding "
          f"{self.obs_pad} / {self.act_pad}"
        )
      check_fits(world_model, t, self.segment, self.obs_pad, self.act_pad)
    for t, n in zip(tasks, normalisers):
      if len(n.obs_min) != t.num_obs or len(n.act_min) != t.num_act:
        raise ValueError(
          f"normaliser for task '{t.name}' has {len(n.obs_min)} obs / {len(n.act_min)} act channels,"
          f" the robot {t.num_obs} / {t.num_act}: pass the stats of this robot's environment"
        )
    self.sample_chunk = int(sample_chunk)
    co, ca = self.obs_pad, self.act_pad
    pad = lambda a, n, v=0: np.pad(np.asarray(a), [(0, n - len(a))] + [(0, 0)] * (np.ndim(a) - 1), constant_values=v)
    per_robot = [
      padding.padded_structure(r.obs_struct(), r.act_struct(), r.obs_kinds(), r.act_kinds(), co, ca)
      for r in [t.robot for t in tasks]
    ]
    self._static = {k: np.stack([p[k] for p in per_robot]) for k in per_robot[0]}
    self._obs_lo = np.stack([pad(n.obs_min, co) for n in normalisers])
    self._obs_span = np.stack([pad(normalise.span(n.obs_min, n.obs_max), co) for n in normalisers])
    self._act_lo = np.stack([pad(n.act_min, ca) for n in normalisers])
    self._act_span = np.stack([pad(normalise.span(n.act_min, n.act_max), ca) for n in normalisers])
    self._bound_lo = np.stack([pad(t.act_low, ca) for t in tasks]).astype(np.float32)
    self._bound_hi = np.stack([pad(t.act_high, ca) for t in tasks]).astype(np.float32)

  @property
  def history(self) -> int:
    return self._history

  @property
  def action_dim(self) -> int:
    return self.act_pad

  def context(self, env_state) -> WMContext:
    obs_hist = env_state.obs_hist[-self.history :]
    act_hist = env_state.act_hist[env_state.act_hist.shape[0] - (self.history - 1) :]
    if obs_hist.shape[0] != self.history:
      raise ValueError(
        f"the environment keeps {obs_hist.shape[0]} observations of history, the world model needs "
        f"{self.history}: create the environments with history={self.history}"
      )
    return WMContext(
      jnp.asarray(env_state.robot, jnp.int32),
      _pad_last(obs_hist, self.obs_pad),
      _pad_last(act_hist, self.act_pad),
      env_state.goal,
      env_state.steps,
    )

  def bounds(self, ctx: WMContext):
    return jnp.asarray(self._bound_lo)[ctx.robot], jnp.asarray(self._bound_hi)[ctx.robot]

  def stack_states(self, states: Sequence[Any]) -> "HistoryView":
    """One batch from EnvStates of different robots: histories padded to the backend's channels.

    MJX states of different robots cannot be stacked, and the world model does not need them.
    """
    pad = lambda x, n: _pad_last(x, n)
    return HistoryView(
      obs_hist=jnp.concatenate([pad(s.obs_hist[:, -self.history :], self.obs_pad) for s in states]),
      act_hist=jnp.concatenate(
        [pad(s.act_hist[:, s.act_hist.shape[1] - (self.history - 1) :], self.act_pad) for s in states]
      ),
      goal=jnp.concatenate([s.goal for s in states]),
      robot=jnp.concatenate([s.robot for s in states]),
      steps=jnp.concatenate([s.steps for s in states]),
    )

  def batch(self, ctx: WMContext, u_kha: jax.Array) -> dict:
    """The model batch (BATCH_SPEC.md) for K sampled action sequences [K, n, Ca], n <= segment.

    ctx.obs_hist / act_hist are one history for all samples ([H, Co] / [H-1, Ca]) or one each
    ([K, H, Co] / [K, H-1, Ca]: a chained window's)."""
    K, H = u_kha.shape[0], self.history
    T = H + u_kha.shape[1]
    r = ctx.robot
    obs_mask = jnp.asarray(self._static["obs_mask"])[r]
    act_mask = jnp.asarray(self._static["act_mask"])[r]
    obs_lo, obs_span = jnp.asarray(self._obs_lo)[r], jnp.asarray(self._obs_span)[r]
    act_lo, act_span = jnp.asarray(self._act_lo)[r], jnp.asarray(self._act_span)[r]
    hist = jnp.where(obs_mask, normalise.normalise(ctx.obs_hist, obs_lo, obs_span, jnp), 0.0)  # [H, Co]
    obs = jnp.zeros((K, T, self.obs_pad), jnp.float32).at[:, :H].set(jnp.broadcast_to(hist, (K, H, self.obs_pad)))
    # act[t] follows obs[t]: H-1 applied actions, then the plan; the last slot (after the final
    # predicted observation) cannot influence predictions and repeats the last planned action.
    past = jnp.broadcast_to(ctx.act_hist, (K, H - 1, self.act_pad))
    act = jnp.concatenate([past, u_kha, u_kha[:, -1:]], axis=1)
    act = jnp.where(act_mask, normalise.normalise(act, act_lo, act_span, jnp), 0.0)
    return robot_batch(obs, act, {k: jnp.asarray(v)[r] for k, v in self._static.items()})

  def predict(self, ctx: WMContext, u_kha: jax.Array) -> jax.Array:
    """Predicted future observations [K, Hp, Co] in physical units (padded channels 0)."""
    K = u_kha.shape[0]
    chunk = self.sample_chunk
    if chunk and K > chunk:
      if K % chunk:
        raise ValueError(f"samples={K} must be divisible by wm sample_chunk={chunk}")
      u = u_kha.reshape(K // chunk, chunk, *u_kha.shape[1:])
      pred = jax.lax.map(lambda uc: self._chained(ctx, uc), u)
      return pred.reshape(K, *pred.shape[2:])
    return self._chained(ctx, u_kha)

  def _chained(self, ctx: WMContext, u_kha: jax.Array) -> jax.Array:
    """The horizon in windows of `segment` steps: a scan over the full ones, then the rest."""
    K, Hp, seg, H = u_kha.shape[0], u_kha.shape[1], self.segment, self.history
    if seg >= Hp:
      return self._window(ctx, u_kha)
    obs_hist = jnp.broadcast_to(ctx.obs_hist, (K,) + ctx.obs_hist.shape[-2:])
    act_hist = jnp.broadcast_to(ctx.act_hist, (K,) + ctx.act_hist.shape[-2:])

    def window(hist, u_kna):
      obs_h, act_h = hist
      fut = self._window(ctx._replace(obs_hist=obs_h, act_hist=act_h), u_kna)
      # act[i] follows obs[i]: the last H observations and the H-1 actions between them
      obs_h = jnp.concatenate([obs_h, fut], axis=1)[:, -H:]
      act_h = jnp.concatenate([act_h, u_kna], axis=1)[:, act_h.shape[1] + u_kna.shape[1] - (H - 1) :]
      return (obs_h, act_h), fut

    n_full = Hp // seg
    u_full = u_kha[:, : n_full * seg].reshape(K, n_full, seg, -1).swapaxes(0, 1)  # [W, K, seg, Ca]
    hist, fut = jax.lax.scan(window, (obs_hist, act_hist), u_full)
    fut = fut.swapaxes(0, 1).reshape(K, n_full * seg, -1)
    if Hp % seg:
      _, rest = window(hist, u_kha[:, n_full * seg :])
      fut = jnp.concatenate([fut, rest], axis=1)
    return fut

  def _window(self, ctx: WMContext, u_kna: jax.Array) -> jax.Array:
    """One model window: the n steps after ctx's history, [K, n, Co] in physical units."""
    pred = self.world_model.predict(self.params, self.batch(ctx, u_kna))
    r = ctx.robot
    fut = pred[:, self.history :].astype(jnp.float32)
    obs_lo, obs_span = jnp.asarray(self._obs_lo)[r], jnp.asarray(self._obs_span)[r]
    mask = jnp.asarray(self._static["obs_mask"])[r]
    return jnp.where(mask, normalise.denormalise(jnp.clip(fut, 0.0, 1.0), obs_lo, obs_span), 0.0)

  def step_costs(self, ctx: WMContext, u_kha: jax.Array):
    fut = self.predict(ctx, u_kha)
    if len(self.tasks) == 1:
      return observation_costs(self.tasks[0], fut, u_kha, ctx.goal, ctx.step)
    branches = [functools.partial(observation_costs, t) for t in self.tasks]
    return jax.lax.switch(ctx.robot, branches, fut, u_kha, ctx.goal, ctx.step)
