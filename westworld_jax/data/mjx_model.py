"""MJX models of robots' C models, for the MJX rollouts (mjx_backend.py) and control tasks.

`mjx_compatible_model` makes a copy of a model that `mjx.put_model` accepts, adapting what MJX
lacks and saying what it changed (e.g. PGS -> Newton, unsupported enable flags off, the sensor
stage off when MJX cannot compute a sensor, unsupported collision pairs dropped while keeping
contacts with the world); a model it cannot adapt raises the ValueError of `incompatible_error`,
which names the robot and the C backend to use instead. `put_model` / `make_data` use the
project's MJX implementation (IMPL).
"""

from __future__ import annotations

import collections
import copy

import jax
import mujoco
from mujoco import mjx
import numpy as np

try:  # private, but the only source of truth for which collision pairs MJX implements
  from mujoco.mjx._src import collision_driver as _collision_driver
except ImportError:  # pragma: no cover - layout changed; put_model will then report the problem
  _collision_driver = None

IMPL = "jax"  # MJX's JAX implementation (runs on CPU/GPU/TPU); the Warp one needs mujoco_warp
_G = mujoco.mjtGeom
# Integrators MJX's JAX backend steps, by MuJoCo integrator; mjx_compatible_model maps others to these.
INTEGRATORS = {
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
    if o.integrator not in INTEGRATORS:  # implicit, discrete: not stepped by MJX's JAX backend
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
    raise incompatible_error(name, reason) from None
  return m, changes


def incompatible_error(name: str, reason: str) -> ValueError:
  """The error for a robot that cannot run on the MJX backend, and why."""
  return ValueError(
    f"robot '{name}' cannot run on the MJX backend: {reason}. Use backend='rollout' "
    "(multi-threaded MuJoCo C) for this robot."
  )
