"""MJX backend of the corpus collector (`--config.backend=mjx`): batched rollouts on accelerators.

`MJXSimulator(robot)` is a drop-in `simulate.Simulator`: `run(states [n, nstate], ctrl [n, T, nu])`
returns (states [n, T, nstate], sensordata [n, T, nsensordata]) with the same semantics as the
C `mujoco.rollout` path -- each control is held for `robot.frame_skip` physics steps and outputs
are read after each control step; states use the full-physics layout of
`mj_getState(..., mjSTATE_FULLPHYSICS)` (time, qpos, qvel, act, history, plugin state), read and
written with `mjx.get_state` / `mjx.set_state`.

How it runs: `mjx.put_model` of an MJX-compatible copy of the robot's model (see
`mjx_model.mjx_compatible_model`: what MJX lacks is adapted and logged), then one jitted function --
`vmap` over environments of a `lax.scan` over control steps, each a `fori_loop` of frame_skip
`mjx.step` calls -- compiled once per (n, T) and cached.

Precision: MJX runs in float32 (unless jax_enable_x64 is on), so qpos/qvel match C MuJoCo
(float64) only approximately (~1e-6 relative over short horizons on smooth dynamics; contact-rich
or chaotic motion drifts further, as any two simulators do), and adapted models (solver, dropped
contacts) simulate slightly different physics than the C model. `time` is exact: it is rebuilt on
the host in float64 by the same repeated `time += timestep` additions C MuJoCo does (float32 time
would lose ~1e-5 s resolution after 100 s). MJX never auto-resets a diverged simulation: a blow-up
shows as non-finite or exploding state, which `simulate.episode_end` rejects as 'unstable'.

Sensors: by default the task sensors (`robot.sensor_adr`, `TASK_SENSORS`: FRAMEPOS of the root
and tip bodies, SUBTREELINVEL of the root) and every other model sensor are computed by MJX's own
sensor pipeline, so sensordata has the C layout. If the model has sensors MJX cannot compute (or
with `sensors="task"`, which is cheaper), MJX's sensor stage is disabled and only the task-sensor
slots are filled, from MJX data fields with the sensors' semantics: FRAMEPOS of a body is its
inertial frame position `xipos`; SUBTREELINVEL is `mjx.subtree_vel`'s `subtree_linvel`; both at
the state before the last physics step, as `mj_step` evaluates sensors. Other slots are NaN.
"""

from __future__ import annotations

import time
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx
import numpy as np

from westworld_jax.data import simulate
from westworld_jax.data.mjx_model import INTEGRATORS, incompatible_error, make_data, mjx_compatible_model, put_model
from westworld_jax.robots.robot import TASK_SENSORS, Robot

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS


class MJXSimulator(simulate.Simulator):
  """`simulate.Simulator` whose `run` steps all environments in one jitted MJX program.

  Args:
    robot: the robot; its C model is adapted for MJX (see `mjx_compatible_model`).
    sensors: 'auto' (MJX's sensor pipeline when it supports every model sensor, else task sensors
      from data fields), 'mjx', or 'task' (only task-sensor slots, cheaper; others NaN).
    self_collisions: False keeps only robot-vs-world contacts (faster on large robots).
    device: jax device for the model and rollouts (default: jax's default device).
  Attributes:
    compatible_model: the adapted C MjModel that MJX simulates (C reference runs should use it;
      its sensor stage is disabled when sensors come from data fields).
    adaptations: what was changed to make the model MJX-compatible.
  """

  def __init__(
    self, robot: Robot, sensors: str = "auto", self_collisions: bool = True, device: jax.Device | None = None
  ):
    super().__init__(robot, nthread=0)  # C helpers (initial_states, sensors_at) use the original model
    if sensors not in ("auto", "mjx", "task"):
      raise ValueError(f"sensors must be 'auto', 'mjx' or 'task', got '{sensors}'")
    self.compatible_model, self.adaptations = mjx_compatible_model(robot.model, robot.name, self_collisions)
    m = self.compatible_model
    sensor_stage_off = bool(m.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_SENSOR)
    if sensors == "mjx" and sensor_stage_off:
      raise ValueError(
        f"robot '{robot.name}': sensors='mjx' but MJX cannot compute its sensors "
        f"({'; '.join(self.adaptations)}); use sensors='auto' or 'task'"
      )
    if sensors == "task" and not sensor_stage_off:
      m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_SENSOR)
      self.adaptations.append(
        "sensor stage off (sensors='task'): task sensors from MJX data fields, other sensordata slots are NaN"
      )
    self.sensors_from_fields = sensors == "task" or sensor_stage_off
    if self.adaptations:
      logging.warning("MJX backend, robot '%s': adapted the model for MJX: %s", robot.name, "; ".join(self.adaptations))
    try:
      self.mjx_model = put_model(m, device)
      self._data0 = make_data(self.mjx_model, device)
    except (NotImplementedError, ValueError, TypeError, KeyError) as e:
      raise incompatible_error(
        robot.name,
        f"mjx.put_model rejects the model even after adaptation "
        f"({'; '.join(self.adaptations) or 'none'}): {type(e).__name__}: {e}",
      ) from e
    nstate = int(mjx.state_size(self.mjx_model, _STATE))
    if nstate != self.layout.nstate:  # pragma: no cover - MJX and C disagree on the layout
      raise incompatible_error(robot.name, f"MJX full-physics state has {nstate} values, C MuJoCo {self.layout.nstate}")
    self._dtype = np.dtype(self._data0.qpos.dtype)
    self._task = self._task_sensor_index(m)
    self._compiled: dict[tuple[int, int], Callable] = {}

  def close(self):
    self._compiled.clear()
    super().close()

  # --- the jitted rollout -------------------------------------------------------------------
  def _task_sensor_index(self, m: mujoco.MjModel) -> list[tuple[int, int, int]]:
    """(sensordata address, sensor type, body id) of each task sensor."""
    out = []
    for key, stype, _ in TASK_SENSORS:
      sid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SENSOR, f"ww_{key}")
      if sid >= 0:
        if int(m.sensor_objtype[sid]) != int(mujoco.mjtObj.mjOBJ_BODY):  # pragma: no cover
          raise ValueError(f"task sensor ww_{key} is not attached to a body")
        out.append((int(m.sensor_adr[sid]), int(stype), int(m.sensor_objid[sid])))
    return out

  def _sensors_from_fields(self, mx: mjx.Model, d: mjx.Data) -> jax.Array:
    """sensordata with only the task-sensor slots filled, from data fields (see module doc)."""
    sens = jnp.full((self.model.nsensordata,), jnp.nan, d.qpos.dtype)
    need_subtree = any(st == int(mujoco.mjtSensor.mjSENS_SUBTREELINVEL) for _, st, _ in self._task)
    linvel = mjx.subtree_vel(mx, d)._impl.subtree_linvel if need_subtree else None
    for adr, st, body in self._task:
      if st == int(mujoco.mjtSensor.mjSENS_FRAMEPOS):
        val = d.xipos[body]  # FRAMEPOS of mjOBJ_BODY reads the inertial frame
      elif st == int(mujoco.mjtSensor.mjSENS_SUBTREELINVEL):
        val = linvel[body]
      else:  # pragma: no cover - TASK_SENSORS gained a type this module does not know
        raise NotImplementedError(f"task sensor type {st}")
      sens = sens.at[adr : adr + 3].set(val)
    return sens

  def _rollout_fn(self) -> Callable:
    fs = self.robot.frame_skip
    from_fields = self.sensors_from_fields
    integrate = INTEGRATORS[int(self.compatible_model.opt.integrator)]  # mjx_compatible_model maps to these

    def one_env(mx, d0, state, ctrl_tu):
      d = mjx.set_state(mx, d0, state, _STATE)

      def control_step(d, u):
        d = d.replace(ctrl=u)
        if fs > 1:
          d = jax.lax.fori_loop(0, fs - 1, lambda _, dd: mjx.step(mx, dd), d)
        # The last physics step is mjx.step spelled out, to read the sensors where mj_step does:
        # after forward, before integration (MJX's RK4 re-runs forward with sensors at each stage,
        # C MuJoCo's skips them, so post-step sensordata would differ for RK4 models).
        d = mjx.forward(mx, d)
        sens = self._sensors_from_fields(mx, d) if from_fields else d.sensordata
        d = integrate(mx, d)
        return d, (mjx.get_state(mx, d, _STATE), sens)

      _, (states, sens) = jax.lax.scan(control_step, d, ctrl_tu)
      return states, sens

    return jax.jit(jax.vmap(one_env, in_axes=(None, None, 0, 0)))

  def _compiled_for(self, n: int, T: int, states, ctrl) -> Callable:
    key = (n, T)
    if key not in self._compiled:
      t0 = time.perf_counter()
      try:
        self._compiled[key] = self._rollout_fn().lower(self.mjx_model, self._data0, states, ctrl).compile()
      except NotImplementedError as e:
        raise incompatible_error(self.robot.name, f"MJX cannot trace a step of this model: {e}") from e
      logging.info(
        "MJX backend, robot '%s': compiled the rollout for n=%d, T=%d in %.1fs",
        self.robot.name,
        n,
        T,
        time.perf_counter() - t0,
      )
    return self._compiled[key]

  # --- Simulator API ------------------------------------------------------------------------
  def run(self, states: np.ndarray, ctrl_ntu: np.ndarray, substeps: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """As `Simulator.run` (zero-order hold for frame_skip steps, outputs after each control step).

    Args:
      states: [n, nstate] initial full-physics states (float64).
      ctrl_ntu: [n, T, nu] controls in actuator units.
    Returns:
      float64 states [n, T, nstate] and sensordata [n, T, nsensordata] after each control step
      (computed in float32; time exact, see the module doc).
    """
    if substeps:
      raise NotImplementedError("the MJX backend returns control steps only (substeps=False)")
    states = np.asarray(states, np.float64)
    n, T, nu = ctrl_ntu.shape
    if states.shape != (n, self.layout.nstate) or nu != self.model.nu:
      raise ValueError(
        f"expected states [{n}, {self.layout.nstate}] and ctrl [{n}, T, {self.model.nu}], "
        f"got {states.shape} and {ctrl_ntu.shape}"
      )
    s_in = jnp.asarray(states.astype(self._dtype))
    u_in = jnp.asarray(np.asarray(ctrl_ntu).astype(self._dtype))
    out_states, sens = self._compiled_for(n, T, s_in, u_in)(self.mjx_model, self._data0, s_in, u_in)
    out_states = np.array(out_states, np.float64)  # a writable copy (asarray of x64 output is read-only)
    sens = np.array(sens, np.float64)
    # Time as C MuJoCo accumulates it: float64, one `time += timestep` per physics step.
    fs, dt = self.robot.frame_skip, float(self.model.opt.timestep)
    steps = np.empty((n, 1 + T * fs))
    steps[:, 0], steps[:, 1:] = states[:, 0], dt
    out_states[..., 0] = np.add.accumulate(steps, axis=1)[:, fs::fs]
    return out_states, sens
