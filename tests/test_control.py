"""Downstream control (westworld_jax/control): MPPI with the MJX oracle and a world model.

Everything that runs MJX runs in subprocesses pinned to one core before jax is imported (jaxlib on
two shared cores can deadlock at the first call of large vmapped MJX programs). Two subprocesses
start together when the module's first test needs them and run on different cores:
  main     oracle MPPI vs random on pendulum swing-up, control data -> corpus -> data pipeline, a
           perfect-model world-model backend against the oracle, a tiny world model trained for a
           few hundred optax steps driving MPPI in closed loop, channel padding, several robots in
           one world-model batch, and the one-trace guarantee of the replan;
  sharded  8 forced CPU devices: the replan with samples sharded over a mesh == unsharded.
Unit tests of pure functions (noise, weights, trajectory cost, normaliser, config errors) run here.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = """
import os, sys
os.sched_setaffinity(0, {CORE})  # before jax is imported
import json, math, tempfile, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import jax, jax.numpy as jnp
from westworld_jax.control import data, env, loop, mppi, tasks
RES = {}
def emit():
  print("RESULT", json.dumps(RES))
"""

_MAIN = """
import optax
from westworld_jax.data import pipeline, policies, simulate
from westworld_jax.model import registry
t_start = time.time()
task = tasks.make_task("pendulum")

# --- 1. oracle MPPI vs random, same start states (hanging down), 400 steps = 8 s -----------------
envs = env.Envs(task, history=8)  # one set of environments (one compile) for every section
planner = mppi.MPPI(mppi.OracleBackend(task), mppi.MPPIConfig(samples=128, horizon=100, noise=1.0))
key = jax.random.key(0)
log = loop.run_episode(envs, planner, 2, 400, key)
rnd = loop.run_episode(envs, loop.RandomPolicy(task), 2, 400, key)
upright = lambda l: 0.5 * (1 + np.cos(l.obs[:, :, 0]))
RES["oracle"] = {"cost": float(-log.rewards.mean()), "random_cost": float(-rnd.rewards.mean()),
                 "final_upright": float(upright(log)[-50:].mean()), "random_final_upright": float(upright(rnd)[-50:].mean()),
                 "start_equal": bool(np.allclose(log.obs[0], rnd.obs[0])), "traces": planner.trace_count,
                 "steps": int(log.latency_s.shape[0]), "replan_ms": float(np.median(log.latency_s[1:]) * 1e3),
                 "seconds": time.time() - t_start}

# --- 2. control data: best episodes -> corpus -> the training pipeline reads it -------------------
eps = log.episodes() + rnd.episodes()
best = data.select_best(eps, 0.25)
corpus = tempfile.mkdtemp()
meta = data.write_corpus(task, best, corpus, val_fraction=0.0)
try:
  data.write_corpus(task, best, corpus, val_fraction=0.0)
  again = None
except FileExistsError as e:
  again = str(e)
ds, _ = pipeline.make_dataset(pipeline.PipelineConfig(corpus_dir=corpus, environments=[meta["env"]], batch_size=2,
                                                      shuffle=False))
b = ds[0]
RES["data"] = {"env": meta["env"], "kept_returns": [e["return"] for e in best],
               "all_returns": [e["return"] for e in eps], "episodes": len(meta["episodes"]),
               "length": meta["episodes"][0]["length"], "obs_shape": list(b["obs"].shape),
               "obs_max": float(b["obs"].max()), "rewrite_error": again}

# --- 3. world-model backend with a perfect model == oracle (time/channel alignment) --------------
H = 4
norm = mppi.Normaliser(np.array([-20, -60], np.float32), np.array([20, 60], np.float32),
                       np.array([-1], np.float32), np.array([1], np.float32))
lo, span = jnp.asarray(norm.obs_min), jnp.asarray(norm.obs_max - norm.obs_min)

def perfect_predict(params, batch):
  # The pendulum's observation (angle, velocity) is its full state: simulate from obs[H-1].
  def one(o_tc, a_tc):
    x = lo + o_tc[H - 1] * span
    d = task._d0.replace(qpos=x[:1], qvel=x[1:2])
    u = -1.0 + 2.0 * a_tc[H - 1:-1]
    def f(d, u):
      d = task.step(d, u)
      return d, (task.observe(d) - lo) / span
    _, fut = jax.lax.scan(f, d, u)
    return jnp.concatenate([o_tc[:H], fut], axis=0)
  return jax.vmap(one)(batch["obs"], batch["act"])

class Cfg:
  history, max_steps = H, 128
stub = registry.WorldModel("perfect", Cfg(), None, None, perfect_predict, None)
perfect = mppi.MPPI(mppi.WorldModelBackend(stub, None, [task], [norm], horizon=planner.config.horizon), planner.config)
s = envs.reset(jax.random.key(3), 2)
for t in range(6):  # a history with motion and non-zero actions
  s, _ = envs.step(s, jnp.full((2, 1), (-1.0) ** t))
plan = planner.init(jax.random.key(4), s)  # the same plan and noise for both
u_or, _, i_or = planner.replan(plan, s)  # compiled in section 1
u_wm, _, i_wm = perfect.replan(plan, s)
RES["perfect"] = {"u_diff": float(jnp.abs(u_or - u_wm).max()),
                  "cost_diff": max(float(jnp.abs(i_or[k] - i_wm[k]).max()) for k in ("cost_min", "cost_mean", "cost_plan")),
                  "cost_scale": float(jnp.abs(i_or["cost_mean"]).max()),
                  "cost_spread": float((i_or["cost_mean"] - i_or["cost_min"]).min())}

# --- 4. a tiny world model trained on a little pendulum data drives MPPI in closed loop -----------
t0 = time.time()
robot = task.robot
rng = np.random.default_rng(0)
with simulate.Simulator(robot) as sim:
  start = sim.initial_states(rng, 48, noise=1.0)
  act = policies.to_ctrl(robot, policies.open_loop("ou", robot, rng, 48, 120)).astype(np.float32)
  states, _ = sim.run(start, act)
  obs = np.concatenate([sim.observe(start)[:, None], sim.observe(states[:, :-1])], 1)
stats = {"obs_min": obs.min((0, 1)), "obs_max": obs.max((0, 1)), "act_min": act.min((0, 1)), "act_max": act.max((0, 1))}
norm = mppi.Normaliser.from_stats(stats, task.num_obs, task.num_act)
wm = registry.build("westworld", "tiny", n_layers=1)
HW, HP = wm.history, 8
assert HW == envs.history
T = HW + HP
on = np.clip((obs - norm.obs_min) / (norm.obs_max - norm.obs_min), 0, 1).astype(np.float32)
an = np.clip((act - norm.act_min) / (norm.act_max - norm.act_min), 0, 1).astype(np.float32)
static = {"obs_mask": np.ones((1, 2), bool), "act_mask": np.ones((1, 1), bool), "obs_struct": robot.obs_struct()[None],
          "act_struct": robot.act_struct()[None], "obs_kind": robot.obs_kinds()[None], "act_kind": robot.act_kinds()[None]}
def batch(e, t):
  B = len(e)
  return {"obs": np.stack([on[i, j:j + T] for i, j in zip(e, t)]), "act": np.stack([an[i, j:j + T] for i, j in zip(e, t)]),
          "time_mask": np.ones((B, T), bool), "env_id": np.zeros(B, np.int32),
          **{k: np.repeat(v, B, axis=0) for k, v in static.items()}}
params = jax.jit(wm.init)(jax.random.key(0), batch([0], [0]))
opt = optax.adam(3e-3)
opt_state = opt.init(params)
@jax.jit
def train_step(params, opt_state, b, k):
  (l, _), g = jax.value_and_grad(wm.loss, has_aux=True)(params, b, k)
  up, opt_state = opt.update(g, opt_state, params)
  return optax.apply_updates(params, up), opt_state, l
losses = []
for i in range(STEPS):
  params, opt_state, l = train_step(params, opt_state, batch(rng.integers(0, 48, 16), rng.integers(0, 120 - T, 16)),
                                    jax.random.key(i))
  losses.append(float(l))
vb = batch(rng.integers(0, 48, 64), rng.integers(0, 120 - T, 64))
pred = jax.jit(wm.predict)(params, vb)
train_s = time.time() - t0
backend = mppi.WorldModelBackend(wm, params, [task], [norm], horizon=HP)
wplanner = mppi.MPPI(backend, mppi.MPPIConfig(samples=32, horizon=HP, noise=1.0))
wlog = loop.run_episode(envs, wplanner, 2, 30, jax.random.key(5))
RES["wm"] = {"loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
             "mae": float(jnp.abs(pred[:, HW:] - vb["obs"][:, HW:]).mean()),
             "mae_hold": float(np.abs(vb["obs"][:, HW - 1:HW] - vb["obs"][:, HW:]).mean()),
             "returns": wlog.returns.tolist(), "steps": int(wlog.latency_s.shape[0]), "traces": wplanner.trace_count,
             "replan_ms": float(np.median(wlog.latency_s[1:]) * 1e3), "train_s": train_s,
             "info_finite": bool(np.isfinite(wlog.info["cost_min"]).all())}

# --- 5. channel padding does not change world-model costs; several robots share one batch ---------
sw = jax.tree.map(lambda x: x[0], s)
u = jax.random.uniform(jax.random.key(7), (8, HP, 1), minval=-1, maxval=1)
c_one = jax.jit(backend.step_costs)(backend.context(sw), u)  # channels padded to the robot's (2, 1)
reacher = tasks.make_task("reacher")
from westworld_jax.control import policies as pol
rnorm = mppi.Normaliser.from_stats(pol.stats_from_rollouts(reacher, 4, 50), reacher.num_obs, reacher.num_act)
# Two robots, channels padded to (16, 8): the pendulum's costs must not change.
multi = mppi.WorldModelBackend(wm, params, [task, reacher], [norm, rnorm], horizon=HP, obs_pad=16, act_pad=8)
c_multi = jax.jit(multi.step_costs)(multi.context(sw), jnp.pad(u, ((0, 0), (0, 0), (0, 7))))
mplanner = mppi.MPPI(multi, mppi.MPPIConfig(samples=16, horizon=HP))
mres = loop.run_multi_robot([envs, env.Envs(reacher, history=HW, robot_index=1)],
                            mplanner, 2, 3, jax.random.key(8))
RES["padding"] = {"max_diff": float(jnp.abs(c_one[0] - c_multi[0]).max()),
                  "max_term_diff": float(jnp.abs(c_one[2] - c_multi[2]).max()),
                  "healthy_equal": bool(jnp.all(c_one[1] == c_multi[1])), "scale": float(jnp.abs(c_one[0]).mean()),
                  "multi_returns_shape": list(mres["returns"].shape),
                  "multi_finite": bool(np.isfinite(mres["returns"]).all()), "multi_traces": mplanner.trace_count}
RES["seconds"] = time.time() - t_start
emit()
"""

_SHARDED = """
from jax.sharding import AxisType
from westworld_jax.model import registry
from westworld_jax.control import policies as pol
task = tasks.make_task("pendulum")
mesh = jax.make_mesh((8,), ("samples",), axis_types=(AxisType.Auto,))
wm = registry.build("westworld", "tiny")
cfg = mppi.MPPIConfig(samples=32, horizon=8, iterations=2)
params = jax.jit(wm.init)(jax.random.key(0), pol.spec_batch(2, 1, wm.history + cfg.horizon))
norm = mppi.Normaliser.from_stats(pol.stats_from_rollouts(task, 4, 50), 2, 1)
backends = {"oracle": (mppi.OracleBackend(task), 1),
            "world_model": (mppi.WorldModelBackend(wm, params, [task], [norm], cfg.horizon), wm.history)}
RES["devices"] = len(jax.devices())
envs = env.Envs(task, history=wm.history)  # serves both backends: one compile
s = envs.reset(jax.random.key(1), 2)
for name, (backend, _) in backends.items():
  out = []
  for m in (None, mesh):
    p = mppi.MPPI(backend, cfg, mesh=m)
    plan = p.init(jax.random.key(2), s)
    u1, plan, _ = p.replan(plan, s)
    s2, _ = envs.step(s, u1)
    u2, plan, info = p.replan(plan, s2)
    out.append((np.asarray(u2), np.asarray(plan.mean), np.asarray(info["cost_min"])))
    if m is not None:
      hlo = p.replan.lower(plan, s2).compile().as_text()
      RES[name + "_collectives"] = hlo.count("all-reduce") + hlo.count("all-gather")
  RES[name] = {"u_diff": float(np.abs(out[0][0] - out[1][0]).max()), "mean_diff": float(np.abs(out[0][1] - out[1][1]).max()),
               "cost_diff": float(np.abs(out[0][2] - out[1][2]).max() / (np.abs(out[0][2]).max() + 1e-9)),
               "u_scale": float(np.abs(out[0][1]).max())}
emit()
"""

_STEPS = 200  # optax steps for the tiny world model


def _start(code: str, core: int, extra_env: dict | None = None) -> subprocess.Popen:
  env = dict(os.environ, **(extra_env or {}))
  src = textwrap.dedent(_PRELUDE.replace("{CORE}", "{%d}" % core) + code)
  return subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=_ROOT, env=env)


def _finish(proc: subprocess.Popen, what: str, timeout: float) -> dict:
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"{what} subprocess timed out after {timeout}s (compile too slow or jaxlib deadlock): {err[-3000:]}")
  lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, f"{what}: rc={proc.returncode}\nstdout:{out[-3000:]}\nstderr:{err[-5000:]}"
  return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def procs():
  cores = sorted(os.sched_getaffinity(0))
  started = {"main": _start(_MAIN.replace("STEPS", str(_STEPS)), cores[0]),
             "sharded": _start(_SHARDED, cores[-1], {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})}
  yield started
  for p in started.values():
    if p.poll() is None:
      p.kill()


_CACHE = {}


def _result(procs, name):
  if name not in _CACHE:
    _CACHE[name] = _finish(procs[name], name, timeout=420)
  return _CACHE[name]


# --- subprocess checks ------------------------------------------------------------------------------

@pytest.mark.timeout(480)
def test_oracle_mppi_swings_the_pendulum_up(procs):
  r = _result(procs, "main")["oracle"]
  assert r["start_equal"] and r["steps"] == 400
  assert r["random_cost"] > 0.95  # random torques (1 Nm vs 4.9 Nm of gravity) leave it hanging
  assert r["cost"] < 0.75 * r["random_cost"], r
  assert r["final_upright"] > 0.9 and r["random_final_upright"] < 0.1, r  # swung up and held
  assert r["traces"] == 1  # 400 replans, one trace


@pytest.mark.timeout(480)
def test_control_data_corpus_is_readable_by_the_pipeline(procs):
  r = _result(procs, "main")["data"]
  assert r["env"] == "dmc_pendulum-mppi_oracle"
  assert r["kept_returns"] == [max(r["all_returns"])]  # 25% of 4 episodes: the best one
  assert r["episodes"] == 1 and r["length"] == 400
  assert r["obs_shape"] == [2, 150, 8] and 0.0 <= r["obs_max"] <= 1.0
  assert "already holds a corpus environment" in r["rewrite_error"]


@pytest.mark.timeout(480)
def test_world_model_backend_with_a_perfect_model_matches_the_oracle(procs):
  """History/action alignment: a model that simulates exactly plans exactly as the oracle does."""
  r = _result(procs, "main")["perfect"]
  assert r["cost_spread"] > 1e-2  # the action samples do lead to different costs
  assert r["cost_diff"] < 1e-4 * max(1.0, r["cost_scale"]) and r["u_diff"] < 1e-4, r


@pytest.mark.timeout(480)
def test_trained_tiny_world_model_runs_mppi_in_closed_loop(procs):
  r = _result(procs, "main")["wm"]
  assert r["loss_last"] < 0.6 * r["loss_first"], r
  assert r["mae"] < r["mae_hold"], r  # better than predicting no motion
  assert r["steps"] == 30 and r["traces"] == 1 and r["info_finite"]
  assert all(np.isfinite(r["returns"]))


@pytest.mark.timeout(480)
def test_padding_does_not_change_world_model_costs(procs):
  """Pendulum costs with its own channels (2, 1) == padded to (16, 8) in a backend that also holds reacher."""
  r = _result(procs, "main")["padding"]
  assert r["max_diff"] < 1e-4 * max(1.0, r["scale"]) and r["max_term_diff"] < 1e-4 and r["healthy_equal"], r
  assert r["multi_returns_shape"] == [2, 2] and r["multi_finite"] and r["multi_traces"] == 1


@pytest.mark.timeout(480)
def test_sharded_replan_equals_unsharded(procs):
  r = _result(procs, "sharded")
  assert r["devices"] == 8
  for name in ("oracle", "world_model"):
    assert r[name + "_collectives"] > 0, "the samples axis was not partitioned"
    tol = 1e-4 * max(1.0, r[name]["u_scale"])
    assert r[name]["u_diff"] < tol and r[name]["mean_diff"] < tol and r[name]["cost_diff"] < 1e-5, r[name]


# --- pure functions (in process, no MJX) -------------------------------------------------------------

@pytest.mark.timeout(60)
def test_ou_noise_is_correlated_and_unit_variance():
  import jax
  from westworld_jax.control import mppi
  cfg = mppi.MPPIConfig(samples=2048, horizon=20, correlation=0.9)
  eps = np.asarray(mppi.sample_noise(jax.random.key(0), cfg, (2048, 20, 2)))
  assert eps.shape == (2048, 20, 2)
  assert abs(eps.std() - 1.0) < 0.05
  lag1 = np.mean(eps[:, 1:] * eps[:, :-1])
  assert abs(lag1 - 0.9) < 0.05
  smooth = np.asarray(mppi.sample_noise(jax.random.key(1), mppi.MPPIConfig(noise_kind="smooth", knots=4),
                                        (2048, 20, 1)))
  assert abs(smooth.std() - 1.0) < 0.1 and np.mean(smooth[:, 1:] * smooth[:, :-1]) > 0.8


@pytest.mark.timeout(60)
def test_weights_and_trajectory_cost():
  import jax.numpy as jnp
  from westworld_jax.control import mppi, tasks
  cfg = mppi.MPPIConfig(temperature=0.1)
  w = np.asarray(mppi.mppi_weights(jnp.array([1.0, 2.0, jnp.nan, 3.0]), cfg))
  assert w[2] == 0.0 and abs(w.sum() - 1.0) < 1e-6 and w[0] > w[1] > w[3]
  assert np.allclose(np.asarray(mppi.mppi_weights(jnp.array([jnp.nan, jnp.inf]), cfg)), 0.5)  # all diverged
  scaled = np.asarray(mppi.mppi_weights(jnp.array([10.0, 20.0, 0.0, 30.0]) * 7, cfg))
  assert np.allclose(np.asarray(mppi.mppi_weights(jnp.array([10.0, 20.0, 0.0, 30.0]), cfg)), scaled, atol=1e-6)
  # Falls at step 1: steps 0 and 1 count, later steps and the terminal cost do not.
  c = tasks.trajectory_cost(jnp.array([1.0, 2.0, 4.0]), jnp.array([True, False, True]), jnp.array(8.0))
  assert float(c) == 3.0
  c = tasks.trajectory_cost(jnp.array([1.0, 2.0]), jnp.array([True, True]), jnp.array(8.0), discount=0.5)
  assert float(c) == 1.0 + 0.5 * 2.0 + 0.25 * 8.0


@pytest.mark.timeout(60)
def test_normaliser_round_trip_and_constant_channels():
  import jax.numpy as jnp
  from westworld_jax.control import mppi
  lo, hi = np.array([0.0, 1.0, -2.0], np.float32), np.array([2.0, 1.0, 2.0], np.float32)
  span = jnp.asarray(mppi._span(lo, hi))
  x = jnp.array([1.0, 5.0, 3.0])
  v = mppi.normalise(x, lo, span)
  assert np.allclose(np.asarray(v), [0.5, 0.5, 1.0])  # constant -> 0.5; out of range clipped
  assert np.allclose(np.asarray(mppi.denormalise(v, lo, span)), [1.0, 1.0, 2.0])
  with pytest.raises(ValueError, match="another robot"):
    mppi.Normaliser.from_stats({"obs_min": [0], "obs_max": [1], "act_min": [0], "act_max": [1]}, 2, 1)


@pytest.mark.timeout(60)
def test_bad_configs_say_what_to_do():
  from westworld_jax.control import mppi, tasks
  with pytest.raises(ValueError, match="noise_kind"):
    mppi.MPPIConfig(noise_kind="pink")
  with pytest.raises(ValueError, match="unknown MPPI config keys"):
    mppi.MPPIConfig.from_dict({"sample": 3})
  with pytest.raises(ValueError, match="unknown control task"):
    tasks.make_task("cartwheel")
  sys.path.insert(0, _ROOT)
  from experiments import control as control_cfg
  with pytest.raises(ValueError, match="unknown control config variant"):
    control_cfg.get_config("hoper")
  assert control_cfg.get_config("tiny").task == "pendulum"


@pytest.mark.timeout(120)
def test_gym_locomotion_reward_and_termination():
  """Hopper/Walker2d: reward = vx + 1 - 1e-3 |u|^2; gym's healthy ranges (no MJX program is run)."""
  import jax.numpy as jnp
  from westworld_jax.control import tasks
  hopper = tasks.make_task("hopper")
  names = [c.name for c in hopper.robot.obs_channels]
  assert names[:2] == ["rootz", "rooty"] and "rootx:vel" in names and hopper.terminates
  obs = np.zeros(hopper.num_obs, np.float32)
  obs[0], obs[names.index("rootx:vel")] = 1.25, 0.5
  u = jnp.array([1.0, -1.0, 0.0])
  cost, healthy = hopper.cost(jnp.asarray(obs), u, jnp.zeros(3))
  assert bool(healthy) and float(cost) == pytest.approx(-(0.5 + 1.0 - 2e-3))
  for i, v in ((0, 0.6), (1, 0.25), (4, 150.0)):  # too low, torso tilted, exploding joint
    bad = obs.copy()
    bad[i] = v
    assert not bool(hopper.cost(jnp.asarray(bad), u, jnp.zeros(3))[1]), (names[i], v)
  walker = tasks.make_task("walker2d")
  wobs = np.zeros(walker.num_obs, np.float32)
  wobs[0], wobs[1] = 1.25, 0.9  # walker2d allows |angle| < 1
  assert bool(walker.cost(jnp.asarray(wobs), jnp.zeros(6), jnp.zeros(3))[1])
  wobs[0] = 2.1  # and 0.8 < z < 2
  assert not bool(walker.cost(jnp.asarray(wobs), jnp.zeros(6), jnp.zeros(3))[1])
  assert any("integrator" in a for a in hopper.adaptations)  # brax's MJX speed settings


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["reacher", "franka"])
def test_reach_forward_kinematics_matches_mujoco(name):
  import jax.numpy as jnp
  import mujoco
  from westworld_jax.control import tasks
  task = tasks.make_task(name)
  m, d = task.model, mujoco.MjData(task.model)
  rng = np.random.default_rng(0)
  for _ in range(5):
    q = m.qpos0 + rng.uniform(-0.5, 0.5, m.nq)
    d.qpos[:] = q
    mujoco.mj_kinematics(m, d)
    ref = d.xpos[task._ee] + d.xmat[task._ee].reshape(3, 3) @ np.array(task.ee_offset)
    assert np.abs(np.asarray(task.ee_from_qpos(jnp.asarray(q, jnp.float32))) - ref).max() < 1e-5
