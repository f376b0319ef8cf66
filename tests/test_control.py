"""Downstream control (westworld_jax/control): MPPI with the simulator oracles (MJX, C MuJoCo) and a world model.

Everything that runs MJX runs in subprocesses pinned to one core before jax is imported (jaxlib on
two shared cores can deadlock at the first call of large vmapped MJX programs). Three subprocesses
start together when the module's first test needs them (hopper shares aux's core):
  main  oracle MPPI vs random on pendulum swing-up, control data -> corpus -> data pipeline, a
        perfect-model world-model backend against the oracle, and end to end: a tiny world model
        trained on that control data with the training API (training.loop.train), fine-tuned on it
        (control.adapt, as `python -m westworld_jax.control.adapt`) and driving world-model
        MPPI in closed loop through the control CLI's experiment.run (summary.json, video);
  aux   8 forced CPU devices: the replan with samples sharded over a mesh == unsharded; channel
        padding and several robots in one world-model batch;
  hopper  the C MuJoCo and MJX oracles cost the same plans alike; C-oracle MPPI keeps the hopper
        healthy in closed loop; control-data collection steps C MuJoCo on a CPU.
Unit tests of pure functions (noise, weights, trajectory cost, normaliser, config errors, GL
backend selection, the physics choice) run here.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.hang_guard import guard

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = """
import os, sys
os.sched_setaffinity(0, {CORE})  # before jax is imported
if RENDER:  # a working MUJOCO_GL (or the reason there is none) before mujoco is imported
  from westworld_jax.control import experiment
  experiment.prepare_process(pin_cpu="no", render=True)
import json, math, tempfile, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import jax, jax.numpy as jnp
from westworld_jax.control import backends, env, mppi, mppi_corpus, rollout, tasks
from westworld_jax.data import normalise as normalisation
RES = {}
def emit():
  print("RESULT", json.dumps(RES))
"""

_MAIN = """
from westworld_jax.data import pipeline
from westworld_jax.model import registry
t_start = time.time()
task = tasks.make_task("pendulum")

# --- 1. oracle MPPI vs random, same start states (hanging down), 400 steps = 8 s -----------------
# Swinging up takes ~300 steps of pumping whatever the sample count: 32 samples x horizon 64 do it.
envs = env.Envs(task, history=8)  # one set of environments (one compile) for every section
planner = mppi.MPPI(backends.OracleBackend(task), mppi.MPPIConfig(samples=32, horizon=64, noise=1.0))
key = jax.random.key(0)
log = rollout.run_episode(envs, planner, 2, 400, key)
import contextlib, io
with contextlib.redirect_stderr(io.StringIO()) as bar:  # a labelled run shows a progress bar
  rnd = rollout.run_episode(envs, rollout.RandomPolicy(task), 2, 400, key, progress="random pendulum")
upright = lambda l: 0.5 * (1 + np.cos(l.obs[:, :, 0]))
RES["oracle"] = {"cost": float(-log.rewards.mean()), "random_cost": float(-rnd.rewards.mean()),
                 "final_upright": float(upright(log)[-50:].mean()), "random_final_upright": float(upright(rnd)[-50:].mean()),
                 "start_equal": bool(np.allclose(log.obs[0], rnd.obs[0])), "traces": planner.trace_count,
                 "steps": int(log.latency_s.shape[0]), "replan_ms": float(np.median(log.latency_s[1:]) * 1e3),
                 "seconds": time.time() - t_start, "progress": bar.getvalue()}

# --- 2. control data: best episodes -> corpus -> the training pipeline reads it -------------------
eps = log.episodes() + rnd.episodes()
best = mppi_corpus.select_best(eps, 0.25)
corpus = tempfile.mkdtemp()
meta = mppi_corpus.write_corpus(task, best, corpus, val_fraction=0.0)
try:
  mppi_corpus.write_corpus(task, best, corpus, val_fraction=0.0)
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
norm = normalisation.Normaliser(np.array([-20, -60], np.float32), np.array([20, 60], np.float32),
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
  history, max_window_len = H, 128
stub = registry.WorldModel("perfect", Cfg(), None, None, perfect_predict, None)
perfect = mppi.MPPI(backends.WorldModelBackend(stub, None, [task], [norm], horizon=planner.config.horizon), planner.config)
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
RES["t_sections_1_3"] = time.time() - t_start

# --- 4. end to end: train a tiny world model on the control data (training API), fine-tune it -----
# (control.adapt, reusing the collected corpus) and run world-model MPPI through the CLI's run.
t0 = time.time()
sys.path.insert(0, os.getcwd())
from experiments import control as control_config, pretrain as pretrain_config
from westworld_jax.control import adapt
from westworld_jax.training import loop as train_loop
root = tempfile.mkdtemp()
pc = pretrain_config.get_config("tiny")
pc.model.n_layers = 1  # half the compile time of the tiny model's two
pc.data.collect = None  # the corpus exists: the control data of section 2
pc.data.update(corpus_dir=corpus, environments=(meta["env"],), batch_size=4, eval_batch_size=4, num_threads=1,
               horizon=8, obs_buckets=(8,), act_buckets=(4,))
pc.total_steps = PRETRAIN_STEPS
pc.optim.warmup_steps = 2
pc.checkpoint.update(every=PRETRAIN_STEPS, keep=1, async_save=False)
pc.eval.update(every=10**9, max_batches=0)
pc.log.update(every=1, tensorboard=False, progress=False)
pretrained = os.path.join(root, "pretrain")
pre = train_loop.train(pc, pretrained)
losses = [r["loss"] for r in pre.rows if "loss" in r]
t_pre = time.time() - t0
cfg = control_config.get_config("tiny")
cfg.policies = ("world_model",)
cfg.episode_len = 20
cfg.mppi.update(samples=16, horizon=8)
cfg.collect.corpus_dir = corpus  # reused: no new collection
cfg.finetune.update(steps=2, batch_size=4, lr=1e-3, compare=False)
cfg.render.update(width=64, height=48)
ft = adapt.run(cfg, os.path.join(root, "ft"), pretrained)
t_ft = time.time() - t0
out = os.path.join(root, "control")
cfg.collect.corpus_dir = ""  # the control run collects nothing
summary = experiment.run(cfg, out, ft["finetune"]["workdir"])
with open(os.path.join(out, "summary.json")) as f:
  on_disk = json.load(f)
w = on_disk["policies"]["world_model"]
RES["e2e"] = {"pre_step": pre.step, "losses": losses, "ft_files": sorted(os.listdir(os.path.join(root, "ft"))),
              "ft_collect": ft["collect"], "ft_steps": ft["finetune"]["steps"], "ft_loss": ft["finetune"]["loss_last"],
              "files": sorted(os.listdir(out)), "return": w["return_mean"], "episodes": w["episodes"],
              "length": w["length_mean"], "replan_ms": w.get("replan_ms_median"), "trained": w.get("trained"),
              "checkpoint": w.get("checkpoint"), "ft_workdir": ft["finetune"]["workdir"],
              "stats_from": w.get("stats_from"), "traces": w.get("trace_count"), "video": w.get("video"),
              "render_error": on_disk.get("render_error"), "gl_error": experiment._gl_error,
              "same_as_returned": summary["policies"]["world_model"]["return_mean"] == w["return_mean"],
              "t_pretrain": t_pre, "t_finetune": t_ft - t_pre, "t_control": time.time() - t0 - t_ft,
              "seconds": time.time() - t0}
RES["seconds"] = time.time() - t_start
emit()
"""

_AUX = """
from jax.sharding import AxisType
from westworld_jax.model import registry
from westworld_jax.model.batch import zeros_batch
t_start = time.time()
task = tasks.make_task("pendulum")
mesh = jax.make_mesh((8,), ("samples",), axis_types=(AxisType.Auto,))
wm = registry.build("westworld", "tiny", n_layers=1)
cfg = mppi.MPPIConfig(samples=32, horizon=8, iterations=2)
params = jax.jit(wm.init)(jax.random.key(0), zeros_batch(1, wm.history + cfg.horizon, 2, 1))
norm = normalisation.Normaliser.from_stats(normalisation.stats_from_rollouts(task.robot, 4, 50), 2, 1)
backend = backends.WorldModelBackend(wm, params, [task], [norm], cfg.horizon)
# The same model with the fused scan kernel (Pallas interpreter here): under the mesh it must run per
# shard of the samples (shard_map), as XLA cannot split a kernel call on GPU/TPU.
wm_k = registry.build("westworld", "tiny", n_layers=1, ssm_scan_impl="kernel")
backend_k = backends.WorldModelBackend(wm_k, params, [task], [norm], cfg.horizon)
by_name = {"oracle": backends.OracleBackend(task), "world_model": backend, "world_model_kernel": backend_k}
RES["devices"] = len(jax.devices())

# --- 1. samples sharded over 8 devices == unsharded --------------------------------------------
envs = env.Envs(task, history=wm.history)  # serves both backends: one compile
s = envs.reset(jax.random.key(1), 2)
for name, b in by_name.items():
  out = []
  for m in (None, mesh):
    p = mppi.MPPI(b, cfg, mesh=m)
    plan = p.init(jax.random.key(2), s)
    # With the mesh, compile once ahead of time: the same executable runs and shows its collectives.
    replan = p.replan if m is None else p.replan.lower(plan, s).compile()
    u1, plan, _ = replan(plan, s)
    s2, _ = envs.step(s, u1)
    u2, plan, info = replan(plan, s2)
    out.append((np.asarray(u2), np.asarray(plan.mean), np.asarray(info["cost_min"])))
    if m is not None:
      hlo = replan.as_text()
      RES[name + "_collectives"] = hlo.count("all-reduce") + hlo.count("all-gather")
      RES[name + "_per_shard_scan"] = "sdy.manual_computation" in p.replan.lower(plan, s).as_text()
  RES[name] = {"u_diff": float(np.abs(out[0][0] - out[1][0]).max()), "mean_diff": float(np.abs(out[0][1] - out[1][1]).max()),
               "cost_diff": float(np.abs(out[0][2] - out[1][2]).max() / (np.abs(out[0][2]).max() + 1e-9)),
               "u_scale": float(np.abs(out[0][1]).max())}
RES["t_sharded"] = time.time() - t_start

# --- 2. channel padding does not change world-model costs; several robots share one batch ---------
sw = jax.tree.map(lambda x: x[0], s2)
u = jax.random.uniform(jax.random.key(7), (8, cfg.horizon, 1), minval=-1, maxval=1)
c_one = jax.jit(backend.step_costs)(backend.context(sw), u)  # channels padded to the robot's (2, 1)
reacher = tasks.make_task("reacher")
rnorm = normalisation.Normaliser.from_stats(normalisation.stats_from_rollouts(reacher.robot, 4, 50), reacher.num_obs, reacher.num_act)
# Two robots, channels padded to (16, 8): the pendulum's costs must not change.
multi = backends.WorldModelBackend(wm, params, [task, reacher], [norm, rnorm], horizon=cfg.horizon, obs_pad=16, act_pad=8)
c_multi = jax.jit(multi.step_costs)(multi.context(sw), jnp.pad(u, ((0, 0), (0, 0), (0, 7))))
mplanner = mppi.MPPI(multi, mppi.MPPIConfig(samples=16, horizon=cfg.horizon))
mres = rollout.run_multi_robot([envs, env.Envs(reacher, history=wm.history, robot_index=1)],
                            mplanner, 2, 3, jax.random.key(8))
RES["padding"] = {"max_diff": float(jnp.abs(c_one[0] - c_multi[0]).max()),
                  "max_term_diff": float(jnp.abs(c_one[2] - c_multi[2]).max()),
                  "healthy_equal": bool(jnp.all(c_one[1] == c_multi[1])), "scale": float(jnp.abs(c_one[0]).mean()),
                  "spread": float(jnp.abs(c_one[0] - c_one[0].mean()).max()),
                  "multi_returns_shape": list(mres["returns"].shape),
                  "multi_finite": bool(np.isfinite(mres["returns"]).all()), "multi_traces": mplanner.trace_count}
RES["seconds"] = time.time() - t_start
emit()
"""

_HOPPER = """
import mujoco
from westworld_jax.control import mujoco_backend, physics
t_start = time.time()
task = tasks.make_task("hopper")

# --- 1. C MuJoCo and MJX oracles: the same plans from the same state cost the same ---------------
c_envs, m_envs = physics.make_envs(task, physics="mujoco"), physics.make_envs(task, physics="mjx")
sc, sm = c_envs.reset(jax.random.key(0), 2), m_envs.reset(jax.random.key(0), 2)  # the same start states
c_or, m_or = mujoco_backend.MujocoOracle(task), backends.OracleBackend(task)
u = jax.random.uniform(jax.random.key(1), (2, 4, 20, task.num_act), minval=-1.0, maxval=1.0)  # [env, plan, step, act]
cost = lambda o, s: jax.jit(jax.vmap(o.step_costs))(jax.vmap(o.context)(s), u)
(cc, hc, tc), (cm, hm, tm) = cost(c_or, sc), cost(m_or, sm)
s1, r1 = c_envs.step(sc, u[:, 0, 0])  # the environment's own step: the C oracle predicted it exactly
m, d, x = c_or.sim.model, mujoco.MjData(c_or.sim.model), mujoco_backend.from_bits(np.asarray(sc.d.bits))
contact = 0  # steps of the compared rollouts with the foot on the ground
for e in range(2):
  for k in range(4):
    mujoco.mj_setState(m, d, np.ascontiguousarray(x[e, :c_or.sim.nstate]), mujoco.mjtState.mjSTATE_FULLPHYSICS)
    for t in range(20):
      d.ctrl[:] = np.asarray(u[e, k, t])
      mujoco.mj_step(m, d, nstep=task.frame_skip)
      contact += int(d.ncon > 0)
RES["same_costs"] = {"max_diff": float(jnp.abs(cc - cm).max()), "terminal_diff": float(jnp.abs(tc - tm).max()),
                     "healthy_equal": bool(jnp.all(hc == hm)), "unhealthy": int((~hc).sum()),
                     "spread": float(jnp.abs(cc - cc.mean(axis=1, keepdims=True)).max()), "contact_steps": contact,
                     "steps": int(cc.size), "env_reward_diff": float(jnp.abs(-r1 - cc[:, 0, 0]).max()),
                     "start_equal": bool(jnp.all(sc.obs_hist == sm.obs_hist))}

# --- 2. closed loop: C-oracle MPPI (32 samples x horizon 20) vs random actions, 100 steps --------
planner = mppi.MPPI(physics.make_oracle(task, "mujoco"), mppi.MPPIConfig(samples=32, horizon=20))
t0 = time.time()
log = rollout.run_episode(c_envs, planner, 2, 100, jax.random.key(2))
t_loop = time.time() - t0
rnd = rollout.run_episode(c_envs, rollout.RandomPolicy(task), 8, 100, jax.random.key(2))
RES["loop"] = {"returns": log.returns.tolist(), "lengths": log.lengths.tolist(), "alive": bool(log.alive[-1].all()),
               "steps": int(log.latency_s.shape[0]), "random_returns": rnd.returns.tolist(),
               "random_lengths": rnd.lengths.tolist(), "traces": planner.trace_count,
               "replan_ms": float(np.median(log.latency_s[1:]) * 1e3), "seconds": t_loop}

# --- 3. control-data collection on the automatic physics: C MuJoCo on this CPU ------------------
from westworld_jax.data import shards
corpus = tempfile.mkdtemp()
col = mppi_corpus.collect(task, mppi.MPPIConfig(samples=16, horizon=10), corpus, episodes=2, episode_len=30,
                          n_envs=2, keep_fraction=0.5)
meta = shards.load_metadata(os.path.join(corpus, col["env"]))
RES["collect"] = {"physics": col["physics"], "env": col["env"], "kept": col["episodes_kept"],
                  "lengths": [e["length"] for e in meta["episodes"]]}
RES["seconds"] = time.time() - t_start
emit()
"""

_PRETRAIN_STEPS = 8  # training-API steps of the tiny world model (then 2 fine-tuning steps)


def _start(code: str, core: int, extra_env: dict | None = None, render: bool = False) -> subprocess.Popen:
  env = dict(os.environ, **(extra_env or {}))
  src = textwrap.dedent(_PRELUDE.replace("{CORE}", "{%d}" % core).replace("RENDER", str(render)) + code)
  return subprocess.Popen(
    [sys.executable, "-c", src], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=_ROOT, env=env
  )


def _finish(proc: subprocess.Popen, what: str, timeout: float) -> dict:
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"{what} subprocess timed out after {timeout}s (compile too slow or jaxlib deadlock): {err[-3000:]}")
  lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, f"{what}: rc={proc.returncode}\nstdout:{out[-3000:]}\nstderr:{err[-5000:]}"
  return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def procs():
  cores = sorted(os.sched_getaffinity(0))
  started = {
    "main": _start(_MAIN.replace("PRETRAIN_STEPS", str(_PRETRAIN_STEPS)), cores[0], render=True),
    "aux": _start(
      _AUX,
      cores[-1],
      {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=240"},
    ),
    "hopper": _start(_HOPPER, cores[-1]),
  }
  yield started
  for p in started.values():
    if p.poll() is None:
      p.kill()


_CACHE = {}


def _result(procs, name):
  if name not in _CACHE:
    _CACHE[name] = _finish(procs[name], name, timeout=guard(420))
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
  assert "random pendulum" in r["progress"] and "alive=" in r["progress"], r["progress"][-300:]


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
def test_trained_and_finetuned_world_model_runs_mppi_end_to_end(procs):
  """training.loop.train on control data -> control.adapt -> the CLI's experiment.run with that
  checkpoint: world-model MPPI in closed loop, summary.json / returns.json / latency.csv written."""
  r = _result(procs, "main")["e2e"]
  assert r["pre_step"] == _PRETRAIN_STEPS and all(np.isfinite(r["losses"])), r
  assert r["losses"][-1] < r["losses"][0], r  # it did train
  assert r["ft_collect"]["reused"] and r["ft_collect"]["train_episodes"] == 1, r["ft_collect"]
  assert r["ft_steps"] == 2 and np.isfinite(r["ft_loss"]) and "finetune.json" in r["ft_files"], r
  assert {"summary.json", "summary.md", "returns.json", "latency.csv", "trajectory_world_model.png"} <= set(r["files"])
  assert np.isfinite(r["return"]) and r["episodes"] == 1 and r["length"] == 20 and r["same_as_returned"], r
  assert r["trained"] and r["checkpoint"] == r["ft_workdir"] and r["traces"] == 1 and np.isfinite(r["replan_ms"])
  assert r["stats_from"] == "dmc_pendulum-mppi_oracle"  # the fine-tuned run's own normalisation
  if r["gl_error"] is None:  # a video when MuJoCo can render here, else the reason in the summary
    assert r["video"] and r["video"].endswith((".mp4", ".gif")) and os.path.basename(r["video"]) in r["files"], r
  else:
    assert r["video"] is None and r["render_error"] == r["gl_error"], r


@pytest.mark.timeout(480)
def test_padding_does_not_change_world_model_costs(procs):
  """Pendulum costs with its own channels (2, 1) == padded to (16, 8) in a backend that also holds reacher."""
  r = _result(procs, "aux")["padding"]
  assert r["spread"] > 0  # the costs do depend on the actions
  assert r["max_diff"] < 1e-4 * max(1.0, r["scale"]) and r["max_term_diff"] < 1e-4 and r["healthy_equal"], r
  assert r["multi_returns_shape"] == [2, 2] and r["multi_finite"] and r["multi_traces"] == 1


@pytest.mark.timeout(480)
def test_sharded_replan_equals_unsharded(procs):
  r = _result(procs, "aux")
  assert r["devices"] == 8
  for name in ("oracle", "world_model", "world_model_kernel"):
    assert r[name + "_collectives"] > 0, "the samples axis was not partitioned"
    tol = 1e-4 * max(1.0, r[name]["u_scale"])
    assert r[name]["u_diff"] < tol and r[name]["mean_diff"] < tol and r[name]["cost_diff"] < 1e-5, r[name]
  # The scan kernel runs on each device's samples (shard_map); the chunked scan needs none.
  assert r["world_model_kernel_per_shard_scan"] and not r["world_model_per_shard_scan"]


@pytest.mark.timeout(480)
def test_c_and_mjx_oracles_give_the_same_costs(procs):
  """Hopper, 2 start states x 4 random plans of 20 steps: per-step costs, healthy flags, terminal costs.

  Tolerance 1e-4: MJX steps in float32 and C MuJoCo in float64 (the same adapted model, solver and
  contacts), so rounding differences grow over the 80 physics steps, most at the foot's ground
  contacts; measured ~2e-6, so 1e-4 leaves a wide margin and is still ~1000x below the cost
  differences between plans that MPPI weighs.
  """
  r = _result(procs, "hopper")["same_costs"]
  assert r["start_equal"] and r["contact_steps"] > 20, r  # the plans do reach the ground
  assert r["spread"] > 0.1 and r["unhealthy"] > 0, r  # plans differ, and some fall (flags of both kinds)
  assert r["max_diff"] < 1e-4 and r["terminal_diff"] < 1e-4 and r["healthy_equal"], r
  assert r["env_reward_diff"] == 0.0, r  # the C oracle plans from the environment's exact float64 state


@pytest.mark.timeout(480)
def test_c_oracle_mppi_keeps_the_hopper_healthy(procs):
  """100 closed-loop steps in C MuJoCo: MPPI stays up, uniform random actions fall (~10-60 steps)."""
  r = _result(procs, "hopper")["loop"]
  assert r["steps"] == 100 and r["lengths"] == [100, 100] and r["alive"], r
  assert min(r["returns"]) > 150.0, r  # ~225 measured (forward speed + 1 per healthy step)
  assert max(r["random_returns"]) < 150.0 and max(r["random_lengths"]) < 100, r  # measured: <= 62.4, <= 58 steps
  assert r["traces"] == 1


@pytest.mark.timeout(480)
def test_control_data_collection_uses_the_c_oracle_on_a_cpu(procs):
  r = _result(procs, "hopper")["collect"]
  assert r["physics"] == "mujoco" and r["env"] == "hopper-mppi_oracle" and r["kept"] == 1, r
  assert r["lengths"] == [30], r  # MPPI kept the hopper up for the whole episode


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
  smooth = np.asarray(
    mppi.sample_noise(jax.random.key(1), mppi.MPPIConfig(noise_kind="smooth", knots=4), (2048, 20, 1))
  )
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
  from westworld_jax.data import normalise as normalisation
  from westworld_jax.data import normalise

  lo, hi = np.array([0.0, 1.0, -2.0], np.float32), np.array([2.0, 1.0, 2.0], np.float32)
  span = jnp.asarray(normalise.span(lo, hi))
  x = jnp.array([1.0, 5.0, 3.0])
  v = normalise.normalise(x, lo, span, jnp)
  assert np.allclose(np.asarray(v), [0.5, 0.5, 1.0])  # constant -> 0.5; out of range clipped
  assert np.allclose(np.asarray(normalise.denormalise(v, lo, span)), [1.0, 1.0, 2.0])
  with pytest.raises(ValueError, match="another robot"):
    normalisation.Normaliser.from_stats({"obs_min": [0], "obs_max": [1], "act_min": [0], "act_max": [1]}, 2, 1)


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


@pytest.mark.timeout(60)
def test_a_missing_gl_backend_is_reported_not_fatal(monkeypatch):
  """The CLI probes MUJOCO_GL before mujoco is imported: a backend that cannot work (here an invalid
  name; on a machine without libOSMesa also 'osmesa') becomes a message and MUJOCO_GL=disabled."""
  from westworld_jax.control import experiment

  monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)  # restored afterwards, as MUJOCO_GL
  monkeypatch.setenv("MUJOCO_GL", "nonexistent")
  err = experiment.select_gl()
  assert err and "MUJOCO_GL=nonexistent" in err and "MUJOCO_GL=egl" in err
  assert os.environ["MUJOCO_GL"] == "disabled"


@pytest.mark.timeout(120)
def test_physics_choice_auto_and_explicit():
  """'auto' picks C MuJoCo on a CPU; 'mjx' picks MJX; an oracle refuses the other physics' states."""
  import jax
  from westworld_jax.control import backends, env, mujoco_backend, physics, planners, tasks

  sys.path.insert(0, _ROOT)
  from experiments import control as control_cfg

  assert jax.default_backend() == "cpu"
  assert physics.resolve("auto") == "mujoco" and physics.resolve("mjx") == "mjx"
  with pytest.raises(ValueError, match="physics 'bullet' unknown"):
    physics.resolve("bullet")
  task = tasks.make_task("pendulum")
  cfg = control_cfg.get_config("pendulum")
  assert cfg.physics == "auto"
  oracle, _, desc = planners.make_policy("oracle", task, cfg)
  assert isinstance(oracle.backend, mujoco_backend.MujocoOracle) and desc["physics"] == "mujoco"
  assert type(physics.make_envs(task)) is env.MujocoEnvs
  cfg.physics = "mjx"
  oracle, _, desc = planners.make_policy("oracle", task, cfg)
  assert type(oracle.backend) is backends.OracleBackend and desc["physics"] == "mjx"
  assert type(physics.make_envs(task, physics="mjx")) is env.Envs
  c_state = physics.make_envs(task, physics="mujoco").reset(jax.random.key(0), 1)
  m_state = physics.make_envs(task, physics="mjx").reset(jax.random.key(0), 1)
  assert np.array_equal(np.asarray(c_state.obs_hist), np.asarray(m_state.obs_hist))  # one key, one start
  with pytest.raises(TypeError, match="MJX oracle plans from MJX environments"):
    jax.vmap(backends.OracleBackend(task).context)(c_state)
  with pytest.raises(TypeError, match="C MuJoCo oracle plans from C MuJoCo environments"):
    jax.vmap(mujoco_backend.MujocoOracle(task, nthread=1).context)(m_state)
