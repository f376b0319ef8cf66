"""MJX backend of the corpus collector (`--config.backend=mjx`): batched rollouts on accelerators.

`MJXSimulator(robot)` is a drop-in `simulate.Simulator`: `run(states [n, nstate], ctrl [n, T, nu])`
returns (states [n, T, nstate], sensordata [n, T, nsensordata]) with the same semantics as the
C `mujoco.rollout` path -- each control is held for `robot.frame_skip` physics steps and outputs
are read after each control step; states use the full-physics layout of
`mj_getState(..., mjSTATE_FULLPHYSICS)` (time, qpos, qvel, act, history, plugin state), read and
written with `mjx.get_state` / `mjx.set_state`.

How it runs: `mjx.put_model` of an MJX-compatible copy of the robot's model (see
`mjx_compatible_model`: what MJX lacks is adapted and logged, e.g. PGS -> Newton, unsupported
enable flags off, unsupported collision pairs dropped while keeping contacts with the world), then
one jitted function -- `vmap` over environments of a `lax.scan` over control steps, each a
`fori_loop` of frame_skip `mjx.step` calls -- compiled once per (n, T) and cached.

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

import collections
import copy
import time
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx
import numpy as np

from westworld_jax.data import simulate
from westworld_jax.robots.robot import TASK_SENSORS, Robot

try:  # private, but the only source of truth for which collision pairs MJX implements
  from mujoco.mjx._src import collision_driver as _collision_driver
except ImportError:  # pragma: no cover - layout changed; put_model will then report the problem
  _collision_driver = None

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS
IMPL = "jax"  # MJX's JAX implementation (runs on CPU/GPU/TPU); the Warp one needs mujoco_warp
_G = mujoco.mjtGeom
_INTEGRATORS = {
  int(mujoco.mjtIntegrator.mjINT_EULER): mjx.euler,
  int(mujoco.mjtIntegrator.mjINT_RK4): mjx.rungekutta4,
  int(mujoco.mjtIntegrator.mjINT_IMPLICITFAST): mjx.implicit,
}


def put_model(m: mujoco.MjModel, device: jax.Device | None = None) -> mjx.Model:
  """mjx.put_model with the project's MJX implementation (IMPL)."""
  return mjx.put_model(m, device=device, impl=IMPL)


def make_data(mx: mjx.Model, device: jax.Device | None = None) -> mjx.Data:
  """mjx.make_data with the project's MJX implementation (IMPL)."""
  return mjx.make_data(mx, device=device, impl=IMPL)


def _enum_name(e) -> str:
  return getattr(e, "name", str(e)).split("_", 1)[-1].lower()


def _geom_name(m: mujoco.MjModel, g: int) -> str:
  name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or f"geom{g}"
  return f"'{name}' ({_enum_name(_G(int(m.geom_type[g])))})"


class _Unadaptable(Exception):
  """A model feature MJX lacks that cannot be adapted away."""


def _check_collisions(m: mujoco.MjModel) -> tuple[list, list]:
  """Collision pairs MJX would reject: (unsupported type pairs, mesh/hfield pairs with margin)."""
  bad_type, bad_margin = [], []
  if _collision_driver is None:
    return bad_type, bad_margin
  no_margin = {int(_G.mjGEOM_MESH), int(_G.mjGEOM_HFIELD)}
  for g1, g2, ip in _collision_driver.geom_pairs(m):
    t1, t2 = int(m.geom_type[g1]), int(m.geom_type[g2])
    if not _collision_driver.has_collision_fn(t1, t2):
      bad_type.append((int(g1), int(g2), int(ip)))
    elif no_margin & {t1, t2}:
      margin = m.pair_margin[ip] if ip != -1 else m.geom_margin[g1] + m.geom_margin[g2]
      if np.any(margin):
        bad_margin.append((int(g1), int(g2), int(ip)))
  return bad_type, bad_margin


def _adapt_collisions(m: mujoco.MjModel, changes: list[str], self_collisions: bool) -> None:
  """Drops collision pairs MJX cannot compute, in place, keeping every robot geom's world contacts.

  A geom in an unsupported pair is made 'world-only': it keeps colliding with exactly the world
  geoms it collided with before (floor, terrain, walls) for which MJX has a collision function,
  and stops colliding with other robot geoms. This is done with free contype/conaffinity bits --
  one bit per distinct set of allowed world geoms -- so no other pair changes. Robot-robot pairs
  are resolved greedily (the geom in the most unsupported pairs first). With self_collisions=False
  every robot geom is made world-only (MJX compiles and runs much faster with few pairs).
  """
  bad_type, bad_margin = _check_collisions(m)

  # Mesh/hfield pairs with a margin: MJX has no margin there; zero it (contacts activate at touch).
  zeroed = set()
  for g1, g2, ip in bad_margin:
    if ip != -1:
      m.pair_margin[ip] = 0.0
      m.pair_gap[ip] = 0.0
      zeroed.add(f"pair {ip}")
    else:
      for g in (g1, g2):
        if m.geom_margin[g] or m.geom_gap[g]:
          m.geom_margin[g] = 0.0
          m.geom_gap[g] = 0.0
          zeroed.add(_geom_name(m, g))
  if zeroed:
    changes.append(
      f"contact margin/gap set to 0 (MJX has none for mesh/hfield) on {len(zeroed)} "
      f"geoms/pairs: {', '.join(sorted(zeroed)[:8])}{' ...' if len(zeroed) > 8 else ''}"
    )

  explicit = [(g1, g2) for g1, g2, ip in bad_type if ip != -1]
  if explicit:
    g1, g2 = explicit[0]
    raise _Unadaptable(
      f"explicit <contact><pair> between {_geom_name(m, g1)} and {_geom_name(m, g2)}: "
      "MJX has no collision function for these geom types"
    )

  world = m.body_weldid[m.geom_bodyid] == 0
  implicit = (
    [(int(g1), int(g2)) for g1, g2, ip in _collision_driver.geom_pairs(m) if ip == -1]
    if _collision_driver is not None
    else []
  )
  restrict: set[int] = set()
  dropped: dict[int, set[int]] = collections.defaultdict(set)  # geom -> partners no longer touched
  robot_pairs = []
  for g1, g2, _ in bad_type:
    if world[g1] or world[g2]:
      g, w = (g2, g1) if world[g1] else (g1, g2)
      restrict.add(g)
      dropped[g].add(w)
    else:
      robot_pairs.append((g1, g2))
  if not self_collisions:
    restrict |= {g for pair in implicit for g in pair if not world[g]}
  # Greedy cover of the unsupported robot-robot pairs.
  pending = [p for p in robot_pairs if not (restrict & set(p))]
  while pending:
    count = collections.Counter(g for p in pending for g in p)
    g = max(count, key=lambda k: (count[k], k))
    restrict.add(g)
    pending = [p for p in pending if g not in p]
  if not restrict:
    return

  # World geoms each restricted geom may keep touching.
  allowed: dict[int, frozenset] = {}
  for g in restrict:
    keep = set()
    for g1, g2 in implicit:
      if g in (g1, g2):
        other = g2 if g1 == g else g1
        t1, t2 = sorted((int(m.geom_type[g]), int(m.geom_type[other])))
        if world[other] and other not in dropped[g] and _collision_driver.has_collision_fn(t1, t2):
          keep.add(other)
        else:
          dropped[g].add(other)
    allowed[g] = frozenset(keep)
  used = int(np.bitwise_or.reduce(np.concatenate([m.geom_contype, m.geom_conaffinity]).astype(np.int64)))
  free = [1 << b for b in range(30, -1, -1) if not used & (1 << b)]
  groups = sorted({a for a in allowed.values() if a}, key=sorted)
  if len(groups) > len(free):
    raise _Unadaptable(
      f"{len(groups)} contact groups needed to drop unsupported collision pairs but only "
      f"{len(free)} contype/conaffinity bits are free"
    )
  bit = dict(zip(groups, free))
  for g in sorted(restrict):
    b = bit.get(allowed[g], 0)
    m.geom_contype[g] = b
    m.geom_conaffinity[g] = 0
    for w in allowed[g]:
      m.geom_conaffinity[w] |= b
  lines = []
  for g in sorted(restrict):
    keep = ", ".join(_geom_name(m, w) for w in sorted(allowed[g]))
    lines.append(
      f"{_geom_name(m, g)} "
      + (f"now collides only with {keep}" if keep else "no longer collides")
      + f" ({len(dropped[g])} pairs dropped)"
    )
  why = "self-collisions off" if not self_collisions else "MJX lacks their collision functions"
  changes.append(
    f"collision pairs dropped ({why}), world contacts kept: "
    + "; ".join(lines[:6])
    + (f"; ... {len(lines) - 6} more geoms" if len(lines) > 6 else "")
  )


def _contact_dims(m: mujoco.MjModel) -> np.ndarray:
  """condim of every contact slot MJX would allocate (what mjx.make_data checks)."""
  try:
    return np.asarray(_collision_driver.make_condim(m))
  except Exception:  # pylint: disable=broad-except  # private API moved: make_data will report it
    return np.zeros(0, int)


def _adapt_sensors(m: mujoco.MjModel, changes: list[str]) -> bool:
  """Disables MJX's sensor stage if any model sensor is one MJX cannot compute; True if disabled."""
  supported = {int(t) for t in mjx.SensorType}
  bad = []
  for s in range(m.nsensor):
    st = int(m.sensor_type[s])
    unsupported = st not in supported
    if st == int(mujoco.mjtSensor.mjSENS_CONTACT):
      # MJX's JAX implementation lacks site/body/subtree matching and the net-force reduction.
      kinds = {int(m.sensor_objtype[s]), int(m.sensor_reftype[s])}
      unsupported |= (
        bool(kinds & {int(mujoco.mjtObj.mjOBJ_SITE), int(mujoco.mjtObj.mjOBJ_BODY), int(mujoco.mjtObj.mjOBJ_XBODY)})
        or int(m.sensor_intprm[s, 1]) == 3
      )
    if unsupported:
      bad.append(s)
  if not bad:
    return False
  names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_SENSOR, s) or f"sensor{s}" for s in bad]
  for s in bad:  # retyped only to pass put_model's checks: the sensor stage is off, nothing reads them
    m.sensor_type[s] = mujoco.mjtSensor.mjSENS_CLOCK
  m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_SENSOR)
  changes.append(
    f"sensor stage off ({len(bad)} sensors MJX cannot compute: {', '.join(names[:5])}); "
    "task sensors computed from MJX data fields, other sensordata slots are NaN"
  )
  return True


def mjx_compatible_model(
  model: mujoco.MjModel, name: str = "robot", self_collisions: bool = True
) -> tuple[mujoco.MjModel, list[str]]:
  """A copy of `model` that `mjx.put_model` accepts, and what was changed (human-readable).

  Raises ValueError naming the robot and MJX's reason when the model cannot be adapted.
  """
  m = copy.deepcopy(model)
  changes: list[str] = []
  o = m.opt
  try:
    if m.nflex:
      raise _Unadaptable("flex (deformable) objects are not implemented in MJX's JAX backend")
    if o.solver not in {int(s) for s in mjx.SolverType}:
      changes.append(f"solver {_enum_name(mujoco.mjtSolver(o.solver))} -> newton")
      o.solver = mujoco.mjtSolver.mjSOL_NEWTON
    if o.integrator not in _INTEGRATORS:  # implicit, discrete: not stepped by MJX's JAX backend
      changes.append(f"integrator {_enum_name(mujoco.mjtIntegrator(o.integrator))} -> implicitfast")
      o.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    fluid = o.density > 0 or o.viscosity > 0 or np.any(o.wind)
    if fluid and o.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST:
      changes.append("integrator implicitfast -> euler (MJX has no implicitfast with fluid drag)")
      o.integrator = mujoco.mjtIntegrator.mjINT_EULER
    if o.cone not in {int(c) for c in mjx.ConeType}:
      changes.append(f"cone {_enum_name(mujoco.mjtCone(o.cone))} -> pyramidal")
      o.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
    if o.jacobian not in {int(j) for j in mjx.JacobianType}:
      changes.append(f"jacobian {_enum_name(mujoco.mjtJacobian(o.jacobian))} -> dense")
      o.jacobian = mujoco.mjtJacobian.mjJAC_DENSE
    supported_enable = {int(b) for b in mjx.EnableBit}
    for i in range(int(mujoco.mjtEnableBit.mjNENABLE)):
      if o.enableflags & (1 << i) and (1 << i) not in supported_enable:
        changes.append(f"enable flag {_enum_name(mujoco.mjtEnableBit(1 << i))} off")
        o.enableflags &= ~(1 << i)
    _adapt_sensors(m, changes)
    _adapt_collisions(m, changes, self_collisions)
    if o.cone == mujoco.mjtCone.mjCONE_ELLIPTIC and np.any(_contact_dims(m) == 1):
      changes.append("cone elliptic -> pyramidal (MJX has no frictionless condim=1 contacts with an elliptic cone)")
      o.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
  except _Unadaptable as e:
    reason = str(e)
    try:  # MJX's own words, where put_model gets that far
      put_model(m)
    except Exception as mjx_error:  # pylint: disable=broad-except
      reason += f" (mjx.put_model: {type(mjx_error).__name__}: {mjx_error})"
    raise _incompatible(name, reason) from None
  return m, changes


def _incompatible(name: str, reason: str) -> ValueError:
  return ValueError(
    f"robot '{name}' cannot run on the MJX backend: {reason}. Use backend='rollout' "
    "(multi-threaded MuJoCo C) for this robot."
  )


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
      raise _incompatible(
        robot.name,
        f"mjx.put_model rejects the model even after adaptation "
        f"({'; '.join(self.adaptations) or 'none'}): {type(e).__name__}: {e}",
      ) from e
    nstate = int(mjx.state_size(self.mjx_model, _STATE))
    if nstate != self.layout.nstate:  # pragma: no cover - MJX and C disagree on the layout
      raise _incompatible(robot.name, f"MJX full-physics state has {nstate} values, C MuJoCo {self.layout.nstate}")
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
    integrate = _INTEGRATORS[int(self.compatible_model.opt.integrator)]  # mjx_compatible_model maps to these

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
        raise _incompatible(self.robot.name, f"MJX cannot trace a step of this model: {e}") from e
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
