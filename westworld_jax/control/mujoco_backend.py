"""C MuJoCo physics for control on a CPU: the oracle backend and what the environments step with.

On a CPU, MuJoCo's C simulator steps a task one to two orders of magnitude faster than MJX
(benchmarks/oracle_backends.py), so there both the oracle's rollouts and the closed-loop
environments run in C. They step the Task's MjModel (`task.model`: the same adapted model MJX
steps, so both simulate the same physics, up to float64 vs float32 arithmetic and the two codes'
contact and solver arithmetic) with the sensor stage off (costs read qpos/qvel only).

- `MujocoPhysics`: a state is a float64 vector [full-physics state (mj_getState), qacc_warmstart]
  (the warm start makes the solver's next step, and thus an environment, exactly reproducible);
  an environment step (mj_step per environment) and K open-loop rollouts at once on every core
  (mujoco.rollout through data/simulate.py's Simulator), observed as the robot's channels.
- `MjState`: such a state inside a JAX pytree (`EnvState.d`). Its float64 values travel as raw
  uint32 bits: JAX without x64 would round them to float32, and then the oracle would not plan
  from the environment's exact state.
- `MujocoOracle`: the oracle `Backend`. Inside MPPI's jitted replan, one `jax.pure_callback`
  rolls out every environment's samples in a single host call and returns observations; the
  Task's cost functions are applied to them in JAX, as for the MJX oracle and the world model.
"""

from __future__ import annotations

import copy
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from westworld_jax.control import backends
from westworld_jax.control import tasks as tasks_lib
from westworld_jax.data import simulate

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS
_WARM = mujoco.mjtState.mjSTATE_WARMSTART


def default_threads() -> int:
  """Rollout threads: every core this process may run on."""
  return len(os.sched_getaffinity(0))


class MjState(NamedTuple):
  """C MuJoCo state of one environment (or a batch): what `EnvState.d` holds on this physics."""

  bits: jax.Array  # uint32 [2 * size]: the float64 state vector's raw bits
  qpos: jax.Array  # float32 [nq] (logs and rendering)


def to_bits(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x, np.float64).view(np.uint32)


def from_bits(bits) -> np.ndarray:
  return np.ascontiguousarray(bits, np.uint32).view(np.float64)


class MujocoPhysics:
  """A task's model in C MuJoCo: state vectors, environment steps, batched rollouts.

  Args:
    task: the Task (its adapted model `task.model` is copied, sensors off).
    nthread: rollout threads (default: every core this process may run on; 1 runs on the caller).
  """

  def __init__(self, task: tasks_lib.Task, nthread: int | None = None):
    self.task = task
    m = copy.deepcopy(task.model)
    m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_SENSOR)  # ~30% of a Hopper step
    self.model = m
    self.nstate = mujoco.mj_stateSize(m, _FULL)
    self.size = self.nstate + m.nv
    self.nthread = default_threads() if nthread is None else int(nthread)
    self.sim = simulate.Simulator(task.robot, nthread=self.nthread if self.nthread > 1 else 0, model=m)
    self._data = mujoco.MjData(m)  # environment steps
    self._lo = task.act_low.astype(np.float64)
    self._hi = task.act_high.astype(np.float64)

  def close(self):
    self.sim.close()

  def initial(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """[n, size] states at time 0 with these qpos [n, nq] / qvel [n, nv], at rest otherwise."""
    m, d = self.model, self._data
    out = np.zeros((len(qpos), self.size))
    for i in range(len(qpos)):
      mujoco.mj_resetData(m, d)
      d.qpos[:], d.qvel[:] = qpos[i], qvel[i]
      mujoco.mj_getState(m, d, out[i, : self.nstate], _FULL)  # warm start stays 0, as MJX's
    return out

  def step(self, x: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """States [n, size] after holding ctrl [n, nu] (clipped to the bounds) for frame_skip steps."""
    m, d, ns = self.model, self._data, self.nstate
    ctrl = np.clip(ctrl, self._lo, self._hi)
    out = np.empty_like(x)
    for i in range(len(x)):
      mujoco.mj_setState(m, d, np.ascontiguousarray(x[i, :ns]), _FULL)
      mujoco.mj_setState(m, d, np.ascontiguousarray(x[i, ns:]), _WARM)
      d.ctrl[:] = ctrl[i]
      mujoco.mj_step(m, d, nstep=self.task.frame_skip)
      mujoco.mj_getState(m, d, out[i, :ns], _FULL)
      out[i, ns:] = d.qacc_warmstart
    return out

  def qpos(self, x: np.ndarray) -> np.ndarray:
    return x[..., self.sim.layout.qpos]

  def observe(self, x: np.ndarray) -> np.ndarray:
    """float32 [..., num_obs]: the robot's observation channels of states [..., size]."""
    layout = self.sim.layout
    return self.task.robot.obs_from_qpos_qvel(x[..., layout.qpos], x[..., layout.qvel]).astype(np.float32)

  def rollout_obs(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Observations [n, K, Hp, num_obs] after each step of K control sequences u [n, K, Hp, nu]
    from each of the states x [n, size]: all n * K rollouts in one multi-threaded call."""
    n, k, hp, _ = u.shape
    x = np.repeat(x, k, axis=0)
    ns = self.nstate
    states, _ = self.sim.run(x[:, :ns], np.clip(u.reshape(n * k, hp, -1), self._lo, self._hi), warmstart=x[:, ns:])
    obs = self.observe(states)
    # MuJoCo resets a diverged simulation (time restarts): NaN from there on, as MJX's blow-up,
    # so such a rollout gets no weight.
    t = np.concatenate([x[:, :1], states[..., 0]], axis=1)
    obs[np.cumsum(np.diff(t, axis=1) <= 0, axis=1) > 0] = np.nan
    return obs.reshape(n, k, hp, -1)


class MujocoContext(NamedTuple):
  bits: jax.Array  # MjState.bits of the environment
  goal: jax.Array
  step: jax.Array  # int32: the environment's episode step (the reference cost's phase)


class MujocoOracle(backends.OracleBackend):
  """The oracle on C MuJoCo: rollouts from the environment's exact state (MjState)."""

  physics = "mujoco"

  def __init__(self, task: tasks_lib.Task, nthread: int | None = None):
    super().__init__(task)
    self.sim = MujocoPhysics(task, nthread)

  def context(self, env_state) -> MujocoContext:
    if not isinstance(env_state.d, MjState):
      raise TypeError(
        "the C MuJoCo oracle plans from C MuJoCo environments (their EnvState.d is an MjState): "
        "make both with the same physics (control/physics.py)"
      )
    return MujocoContext(env_state.d.bits, env_state.goal, env_state.steps)

  def _host_rollouts(self, bits, u):
    # vmap_method="broadcast_all": leading axes (environments under MPPI's vmap) are shared.
    u = np.asarray(u)
    lead = u.shape[:-3]
    x = from_bits(np.asarray(bits)).reshape(-1, self.sim.size)
    obs = self.sim.rollout_obs(x, u.reshape((-1,) + u.shape[-3:]))
    return obs.reshape(lead + obs.shape[1:])

  def step_costs(self, ctx: MujocoContext, u_kha: jax.Array):
    k, hp = u_kha.shape[:2]
    out = jax.ShapeDtypeStruct((k, hp, self.task.num_obs), jnp.float32)
    obs = jax.pure_callback(self._host_rollouts, out, ctx.bits, u_kha, vmap_method="broadcast_all")
    return backends.observation_costs(self.task, obs, u_kha, ctx.goal, ctx.step)
