"""The "Where to add" recipes of docs/architecture.md, walked as they are written: a scan
implementation is its function plus its line in ssm.IMPLS, a model is its builder plus its line
in registry.BUILDERS; everything else (configs, the model, the benchmark, the training config's
`model`) takes them from there."""

import ast
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import test_ssm
from westworld_jax import config_files
from westworld_jax.control import backends, tasks
from westworld_jax.data import collect, normalise, pipeline
from westworld_jax.robots import catalogue
from westworld_jax.model import registry, ssm
from westworld_jax.model.baselines.mlp_ensemble import build_mlp_ensemble
from westworld_jax.model.batch import zeros_batch
from westworld_jax.model.configs import get_model_config
from westworld_jax.training import run_files

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
_EXPERIMENTS = os.path.join(os.path.dirname(_BENCH), "experiments")
_SEQUENTIAL = ssm.IMPLS["sequential"]
data_config = config_files.load_sibling(os.path.join(_EXPERIMENTS, "data.py"), "data")


def _batch(b=2, t=10, co=3, ca=2):
  rng = np.random.default_rng(0)
  batch = zeros_batch(b, t, co, ca)
  batch["obs"] = rng.uniform(size=batch["obs"].shape).astype(np.float32)
  batch["act"] = rng.uniform(size=batch["act"].shape).astype(np.float32)
  return batch


def _benchmark_ssm(monkeypatch):
  """benchmarks/ssm.py as a module (it imports benchmarks/common.py as `common`)."""
  monkeypatch.syspath_prepend(_BENCH)
  spec = importlib.util.spec_from_file_location("_bench_ssm", os.path.join(_BENCH, "ssm.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.timeout(120)
def test_scan_recipe_one_function_and_its_line_in_impls(monkeypatch):
  calls = []

  def _scan_echo(x, dt, A, B, C, h0, opts):  # the recipe's function: here the sequential scan
    calls.append(opts.chunk_size)
    return _SEQUENTIAL(x, dt, A, B, C, h0, opts)

  monkeypatch.setitem(ssm.IMPLS, "echo", _scan_echo)  # the recipe's one line

  echo = registry.build("westworld", "tiny", n_layers=1, ssm_scan_impl="echo")
  sequential = registry.build("westworld", "tiny", n_layers=1, ssm_scan_impl="sequential")
  batch = _batch()
  params = jax.jit(sequential.init)(jax.random.key(0), batch)
  got = jax.jit(echo.predict)(params, batch)
  want = jax.jit(sequential.predict)(params, batch)
  assert calls, "the model never ran the registered scan"
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  assert "echo" in _benchmark_ssm(monkeypatch).parse_args([]).impls.split(",")
  with pytest.raises(ValueError, match="ssm_scan_impl='fft': use 'auto', .*'echo'"):
    get_model_config("tiny", ssm_scan_impl="fft")


def test_scan_tests_cover_every_registered_impl():
  assert set(ssm.IMPLS) <= set(test_ssm.IMPLS)


@pytest.mark.timeout(60)
def test_baseline_recipe_one_builder_and_its_line_in_builders(monkeypatch):
  def build_echo(size, **overrides):  # the recipe's builder: here the MLP ensemble's
    return build_mlp_ensemble(size, **overrides)

  monkeypatch.setitem(registry.BUILDERS, "echo", build_echo)  # the recipe's one line
  assert "echo" in registry.names()

  cfg = config_files.model_config("echo", "tiny", history=4)  # a training config's `model`
  assert (cfg.name, cfg.size, cfg.fields_of, cfg.history) == ("echo", "tiny", "echo", 4)
  fields = {k: v for k, v in cfg.to_dict().items() if k not in ("name", "size", "fields_of")}
  model = run_files.build_model(cfg)  # what training, evaluation and loading build from it
  assert model.history == 4
  want = build_mlp_ensemble("tiny", history=4).config.to_dict()
  assert fields == {k: list(v) if isinstance(v, tuple) else v for k, v in want.items()}

  batch = _batch()
  params = jax.jit(model.init)(jax.random.key(0), batch)
  value, _ = jax.jit(model.loss)(params, batch, jax.random.key(1))
  assert np.isfinite(float(value))


def _package_import_graph() -> dict[str, set[str]]:
  """{unit: units it imports}: a unit is a subpackage or top-level module of westworld_jax; every
  import counts (module top or function-local), relative ones resolved."""
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "westworld_jax")
  units = {n.removesuffix(".py") for n in os.listdir(root) if n.endswith(".py") or os.path.isdir(os.path.join(root, n))}
  graph: dict[str, set[str]] = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(dirpath, name)
      parts = os.path.relpath(path, os.path.dirname(root))[:-3].split(os.sep)
      package = parts[:-1]  # the module's package, for relative imports
      unit = parts[1] if len(parts) > 1 else parts[0]
      for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
          targets = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
          base = package[: len(package) - node.level + 1] if node.level else []
          module = base + (node.module.split(".") if node.module else [])
          targets = [module + [a.name] for a in node.names] if len(module) == 1 else [module]
        else:
          continue
        for t in targets:
          if len(t) > 1 and t[0] == "westworld_jax" and t[1] in units and t[1] != unit:
            graph.setdefault(unit, set()).add(t[1])
  return graph


def test_no_import_cycle_between_units():
  """Dependencies point one way (docs/architecture.md): no two units of westworld_jax import each
  other, directly or through others."""
  graph = _package_import_graph()

  def reaches(a, b, seen=()):
    return any(n == b or (n not in seen and reaches(n, b, seen + (n,))) for n in graph.get(a, ()))

  cycles = {tuple(sorted({a} | {b for b in graph if reaches(a, b) and reaches(b, a)})) for a in graph if reaches(a, a)}
  assert not cycles, f"units of westworld_jax that import each other (directly or through others): {sorted(cycles)}"


def test_robot_recipe(tmp_path, monkeypatch):
  """A robot is its RobotSpec in catalogue._SHIPPED: it then loads, its environments follow from its
  task family's BEHAVIOURS, and the collector writes a corpus environment of it that the input
  pipeline serves."""
  spec = catalogue.RobotSpec("recipe_pendulum", "pkg:dm_control/suite/pendulum.xml", catalogue.BALANCE)
  monkeypatch.setattr(catalogue, "_SHIPPED", catalogue._SHIPPED + (spec,))
  for cached in (catalogue.robot_specs, catalogue.environments, catalogue.load):
    cached.cache_clear()
  try:
    robot = catalogue.load("recipe_pendulum")
    assert robot.num_obs == 2 and robot.num_act == 1
    envs = [e.name for e in catalogue.environments() if e.robot == "recipe_pendulum"]
    assert envs == [f"recipe_pendulum-{b}" for b in catalogue.BEHAVIOURS[catalogue.BALANCE]]
    c = data_config.get_config("tiny")
    c.corpus_dir, c.environments = str(tmp_path), (envs[0],)
    c.episodes_per_env = c.episodes_per_shard = 4
    c.episode_len, c.nthread = 40, 1
    c.checks.min_length = 20
    collect.collect(c)
    ds, _ = pipeline.make_dataset(
      pipeline.PipelineConfig(
        str(tmp_path), (envs[0],), batch_size=2, history=4, horizon=4, shuffle=False, repeat=False
      )
    )
    batch = next(iter(ds))
    assert batch["obs_mask"][0].sum() == 2 and np.isfinite(batch["obs"]).all()
  finally:
    for cached in (catalogue.robot_specs, catalogue.environments):
      cached.cache_clear()


class _HoldStill(tasks.Task):
  """The control-task recipe's example: keep the pendulum's velocity at zero."""

  name = "recipe_hold_still"
  robot_name = "dmc_pendulum"
  episode_len = 20

  def cost(self, obs, ctrl, goal):
    del goal
    vel = obs[jnp.asarray(self.obs_index("joint_vel"))]
    return jnp.sum(vel**2) + 1e-3 * jnp.sum(ctrl**2), jnp.asarray(True)


def test_control_task_recipe(monkeypatch):
  """A control task is its Task subclass (with `cost`) and its line in tasks.TASKS, plus a variant in
  experiments/control.py's TASKS: the config, the oracle and the world-model backend then take it."""
  monkeypatch.setitem(tasks.TASKS, _HoldStill.name, _HoldStill)
  control_cfg = config_files.load_sibling(os.path.join(_EXPERIMENTS, "control.py"), "control")
  monkeypatch.setitem(control_cfg.TASKS, "recipe", _HoldStill.name)
  cfg = control_cfg.get_config("recipe")
  task = tasks.make_task(cfg.task)
  assert isinstance(task, _HoldStill)
  u_kha = jnp.zeros((2, 3, task.num_act))
  d, goal = task.reset(jax.random.key(0))
  oracle = backends.OracleBackend(task)
  cost, healthy, _ = jax.jit(oracle.step_costs)(backends.OracleContext(d, goal), u_kha)
  assert cost.shape == (2, 3) and bool(healthy.all()) and np.isfinite(np.asarray(cost)).all()
  wm = registry.build("westworld", "tiny", history=2, max_window_len=8)
  params = wm.init(jax.random.key(0), zeros_batch(1, 5, task.num_obs, task.num_act))
  stats = {"obs_min": [-1.0] * task.num_obs, "obs_max": [1.0] * task.num_obs, "act_min": [-1.0], "act_max": [1.0]}
  backend = backends.WorldModelBackend(
    wm, params, [task], [normalise.Normaliser.from_stats(stats, task.num_obs, task.num_act)], horizon=3
  )
  ctx = backends.WMContext(
    jnp.int32(0), jnp.zeros((2, task.num_obs)), jnp.zeros((1, task.num_act)), jnp.zeros(tasks.GOAL_DIM)
  )
  cost, healthy, _ = jax.jit(backend.step_costs)(ctx, u_kha)
  assert cost.shape == (2, 3) and np.isfinite(np.asarray(cost)).all()
