"""The whole control table in one resumable command:

  python -m westworld_jax.control.table --config experiments/control_table.py[:cpu|paper|tiny] [--workdir DIR]

For each robot (cfg.control[robot]: a control config of experiments/control.py, the paper protocol):
  1. rows   expert_policy, oracle, random: cfg.episodes episodes each from the same start states;
  2. data   cfg.collect_episodes oracle-MPPI episodes from their own start states (with action noise
            for a recipe that asks for it), the fine-tuning data;
  3. models each of cfg.models pretrained (cfg.pretrained[model], or trained here with
            cfg.pretrain[model]); world-model MPPI with it, normalised with the collected episodes'
            min-max statistics; then per recipe of cfg.recipe_names: the kept episodes as a corpus
            environment, fine-tuning (training/finetune.py), world-model MPPI with the fine-tuned
            model (rounds > 1: its own episodes from the collection start states join the data and
            it is fine-tuned again);
  4. report results.json, results.md and plots (control/table_report.py), rewritten after each row.
Every finished episode is a file (control/episode_store.py) and every training run resumes, so a
rerun continues where an interrupted one stopped and never runs a finished episode again.
DIR (default workdirs/control_table/<variant>): <robot>/rows/<row>/ep<i>.{json,npz}, <robot>/collect/,
<robot>/corpus/, <robot>/finetune/<model>-<recipe>[-r<k>]/, pretrain/<model>/, videos and plots.
"""

from __future__ import annotations

import hashlib
import os

from absl import app, flags, logging
from ml_collections import config_flags

from westworld_jax import cli
from westworld_jax.errors import UserError

from westworld_jax.control import experiment  # imports neither jax nor mujoco (pinning comes first)

_CONFIG = _WORKDIR = None  # flags, defined only when run as a program


def _row_dir(workdir: str, robot: str, row: str) -> str:
  return os.path.join(workdir, robot, "rows", row)


def run_row(
  ccfg, policy: str, directory: str, keys, steps: int, label: str, checkpoint=None, observers=None, action_noise=0.0
):
  """The finished episodes of one row (running the missing ones); each is saved as it ends.

  observers: {name: make(planner, task, episode)} of rollout.run_episode observers, one per episode;
    each one's summary() joins the episode's record under `name`, its arrays() (if any) the
    episode's extra arrays (EpisodeStore.arrays).
  action_noise > 0: Gaussian noise of that fraction of each actuator's half range on the executed actions.
  """
  from westworld_jax.control import episode_store, planners, physics  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import render, rollout  # pylint: disable=import-outside-toplevel

  store = episode_store.EpisodeStore(directory)
  todo = store.missing(len(keys))
  task = planners.protocol_task(ccfg)
  if not todo:
    _video(store, planners.policy_task(policy, task, ccfg), ccfg, directory)
    return store.records(len(keys))
  ptask = planners.policy_task(policy, task, ccfg)
  pol, history, desc = planners.make_policy(policy, ptask, ccfg, checkpoint)
  planner = pol
  if action_noise:
    if observers:
      raise ValueError("observers see the planner's own plan: run them without action noise")
    pol = rollout.NoisyPolicy(pol, ptask, action_noise)
    desc["action_noise"] = action_noise
  envs = physics.make_envs(ptask, history=history, physics=ccfg.physics)
  desc = {k: v for k, v in desc.items() if isinstance(v, (str, int, float, bool)) or v is None}
  for i in todo:
    obs = {name: make(planner, ptask, i) for name, make in (observers or {}).items()}

    def observe(*args):
      for o in obs.values():
        o(*args)

    log = rollout.run_episode(
      envs, pol, 1, steps, keys[i], progress=f"{label} episode {i + 1}/{len(keys)}", observer=observe if obs else None
    )
    arrays = {k: v for o in obs.values() if hasattr(o, "arrays") for k, v in o.arrays().items()}
    rec = store.save(i, log, arrays=arrays, **{name: o.summary() for name, o in obs.items()}, **desc)
    for o in obs.values():
      if hasattr(o, "close"):
        o.close()
    print(f"{label} episode {i + 1}/{len(keys)}: return {rec['return']:.1f}, {rec['length']} steps", flush=True)
    if i == 0:
      render.plot_trajectory(log, ptask, os.path.join(directory, "trajectory.png"))
  _video(store, ptask, ccfg, directory)
  return store.records(len(keys))


def _video(store, task, ccfg, directory: str) -> None:
  """The first episode's video (from its saved qpos; also after a resume), unless it exists."""
  from westworld_jax.control import render  # pylint: disable=import-outside-toplevel

  if not ccfg.render.enabled or experiment.gl_error() or not store.done(0):
    return
  if any(os.path.exists(os.path.join(directory, f"video.{ext}")) for ext in ("mp4", "gif")):
    return
  try:
    qpos = store.trajectory(0)["qpos"]
    tmp = render.render_video(task, qpos, os.path.join(directory, "video.tmp"), ccfg.render.width, ccfg.render.height)
    os.replace(tmp, os.path.join(directory, "video" + os.path.splitext(tmp)[1]))  # no half-written video survives
  except render.RenderError as e:
    logging.warning("%s", e)


def _check_finished(workdir: str, model: str) -> None:
  """A given pretrained run must have reached its total_steps (not a run still training)."""
  from westworld_jax.training import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from westworld_jax.training.run_files import read_run_config  # pylint: disable=import-outside-toplevel

  total = read_run_config(workdir)["total_steps"]
  ck = ckpt_lib.Checkpointer(workdir, async_save=False)
  step = ck.latest_step()
  ck.close()
  if step != total:
    raise UserError(
      f"pretrained.{model}={workdir} is at step {step} of {total}: let its training finish "
      f"(python -m westworld_jax.train ... --workdir {workdir} resumes it) or pass another run"
    )


def _pretrained(cfg, model: str, workdir: str) -> str:
  from westworld_jax.training import loop  # pylint: disable=import-outside-toplevel

  given = cfg.pretrained.get(model, "")
  if given:
    _check_finished(given, model)
    return given
  out = os.path.join(workdir, "pretrain", model)
  if model not in cfg.pretrain:
    raise ValueError(
      f"no pretrained workdir nor pretrain config for model '{model}': pass --config.pretrained.{model}=DIR"
    )
  logging.info("pretraining %s in %s", model, out)
  loop.train_to_end(cfg.pretrain[model], out)  # resumes, or returns at once when finished; no half-trained model
  return out


def _episodes_digest(episodes: list[dict]) -> str:
  """A digest of the episodes as a set (the recipes list the same episodes in different orders)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  one = []
  for e in episodes:
    h = hashlib.sha1()
    for k in ("obs", "act"):
      a = np.ascontiguousarray(e[k], np.float32)
      h.update(str(a.shape).encode())
      h.update(a.tobytes())
    one.append(h.hexdigest())
  return hashlib.sha1("".join(sorted(one)).encode()).hexdigest()


def _data_env(cfg, robot: str, ccfg, workdir: str, episodes: list[dict], tag: str) -> tuple[str, str, int]:
  """(corpus_dir, env, training episodes) of the kept episodes written as corpus environment <robot>-mppi_<tag>.

  An environment already there is reused only if it holds these episodes (a digest of them in its
  shard markers; count for ones written without): other data under the same tag (a changed config on
  an old workdir) would otherwise train and report silently on the old data."""
  from westworld_jax.control import mppi_corpus, planners  # pylint: disable=import-outside-toplevel
  from westworld_jax.data import shards  # pylint: disable=import-outside-toplevel

  corpus_dir = os.path.abspath(os.path.join(workdir, robot, "corpus"))
  env = f"{robot}-mppi_{tag}"
  env_dir = os.path.join(corpus_dir, env)
  digest = _episodes_digest(episodes)
  if not os.path.exists(os.path.join(env_dir, shards.METADATA)):
    task = planners.protocol_task(ccfg)
    mppi_corpus.write_corpus(
      task,
      episodes,
      corpus_dir,
      env,
      behaviour=f"mppi_{tag}",
      val_fraction=cfg.finetune.val_fraction,
      episodes_per_shard=256,
      overwrite=True,
      info={"inputs_sha1": digest},
    )
  meta = shards.load_metadata(env_dir)
  stored = (shards.read_marker(env_dir, 0) or {}).get("inputs_sha1")
  same = stored == digest if stored else len(meta["episodes"]) == len(episodes)
  if not same:
    raise UserError(
      f"{env_dir} holds other episodes than this config collects ({len(meta['episodes'])} stored, "
      f"{len(episodes)} now): the table's data settings changed on an existing workdir. Use a new "
      f"--workdir, or remove that directory and the fine-tuning runs under {os.path.join(workdir, robot, 'finetune')}"
    )
  return corpus_dir, env, sum(not e["val"] for e in meta["episodes"])


def _schedule(cfg, recipe) -> tuple[int, float]:
  """(steps, lr) of a recipe's fine-tuning: its own where set, else cfg.finetune's."""
  return int(recipe.get("steps", 0) or cfg.finetune.steps), float(recipe.get("lr", 0.0) or cfg.finetune.lr)


def _finetune(cfg, recipe, start: str, corpus_dir: str, env: str, episodes: int, out: str) -> str:
  from westworld_jax.training import finetune, loop  # pylint: disable=import-outside-toplevel

  f = cfg.finetune
  steps, lr = _schedule(cfg, recipe)
  rc = finetune.finetune_config(
    start,
    env=env,
    corpus_dir=corpus_dir,
    episodes=episodes,
    steps=steps,
    lr=lr,
    warmup_steps=f.warmup_steps,
    final_lr_fraction=f.final_lr_fraction,
    batch_size=f.batch_size,
    seed=cfg.seed,
  )
  loop.train_to_end(rc, out)  # resumes, or returns at once when finished; no half-trained model
  return out


def _collect_tag(noise: float) -> str:
  """Names the oracle's collection episodes (with Gaussian action noise of `noise` x half range)."""
  return "oracle" if not noise else f"oracle_noise{noise:g}"


def _data_tag(recipe) -> str:
  """Names the fine-tuning data of a recipe by what it holds (recipes with the same data share it)."""
  tag = _collect_tag(recipe.action_noise)
  tag = tag if recipe.keep >= 1.0 else f"{tag}_best{recipe.keep:g}"
  return f"{tag}_sampled" if recipe.sampled else tag


def _collected(cfg, robot, ccfg, workdir, keys, steps, noise: float) -> tuple[list[dict], list[dict]]:
  """(episodes, sampled windows) of the oracle's collection episodes (with Gaussian action noise of
  `noise` x half range; without noise, cfg.sampled's MPPI-sampled rollouts are kept beside them)."""
  from westworld_jax.control import episode_store, sampled_rollouts  # pylint: disable=import-outside-toplevel

  tag = _collect_tag(noise)
  d = os.path.join(workdir, robot, "collect", tag)
  c = ccfg.copy_and_resolve_references()
  c.render.enabled = False
  observers = None
  if not noise and cfg.sampled.every:
    sc = cfg.sampled
    observers = {
      "sampled_rollouts": lambda p, t, i: sampled_rollouts.SampledRollouts(
        p, t, sc.history, sc.horizon, sc.every, sc.count, seed=cfg.seed + 1000 + i
      )
    }
  run_row(c, "oracle", d, keys, steps, f"{robot} data {tag}", observers=observers, action_noise=noise)
  store = episode_store.EpisodeStore(d)
  windows = []
  for i in range(len(keys)):
    a = store.arrays(i)
    windows += [{"obs": o, "act": u} for o, u in zip(a.get("window_obs", ()), a.get("window_act", ()))]
  return [store.trajectory(i) for i in range(len(keys))], windows


def run_robot(cfg, robot: str, workdir: str, report) -> None:
  from westworld_jax.control import episode_store, mppi_corpus, plan_check, tasks  # pylint: disable=import-outside-toplevel

  ccfg = cfg.control[robot].copy_and_resolve_references()
  ccfg.seed = cfg.seed
  steps = cfg.episode_len or ccfg.episode_len or tasks.make_task(ccfg.task).episode_len
  policies = [p for p in cfg.policies if p in ccfg.policies]  # e.g. no expert_policy where the robot has none
  keys = episode_store.episode_keys(cfg.seed, cfg.episodes)
  for policy in ("expert_policy", "oracle", "random"):
    if policy in policies:
      run_row(ccfg, policy, _row_dir(workdir, robot, policy), keys, steps, f"{robot} {policy}")
      report()
  if "world_model" not in policies:
    return
  if "oracle" in policies and cfg.oracle_at_world_model_size:
    # The simulator planning at the world model's samples x horizon: what a perfect model could reach.
    small = ccfg.copy_and_resolve_references()
    with small.unlocked():
      small.policy_mppi.oracle = dict(ccfg.policy_mppi.get("world_model", {}))
    run_row(small, "oracle", _row_dir(workdir, robot, "oracle_wm_size"), keys, steps, f"{robot} oracle at the wm size")
    report()
  data_keys = episode_store.episode_keys(cfg.seed + 1, cfg.collect_episodes)
  base, windows = _collected(cfg, robot, ccfg, workdir, data_keys, steps, 0.0)
  corpus_dir, stats_env, _ = _data_env(cfg, robot, ccfg, workdir, base, "oracle")
  if windows:  # as the authors: the min-max of the MPPI rollouts, whose range holds falls (episodes' may not)
    _, stats_env, _ = _data_env(cfg, robot, ccfg, workdir, base + windows, "oracle_sampled")
  check = None
  if cfg.plan_check_every:
    check = {
      "plan_check": lambda p, t, i: plan_check.PlanCheck(
        p, t, wcfg.physics, cfg.plan_check_every, cfg.get("plan_check_candidates", 0), seed=cfg.seed + i
      )
    }
  wcfg = ccfg.copy_and_resolve_references()
  wcfg.stats.corpus_env = os.path.join(corpus_dir, stats_env)  # for pretrained models (fine-tuned: their data's)
  for model in cfg.models:
    pretrained = _pretrained(cfg, model, workdir)
    run_row(
      wcfg, "world_model", _row_dir(workdir, robot, f"wm-{model}-pretrained"), keys, steps,
      f"{robot} {model} pretrained", pretrained, check,
    )  # fmt: skip
    report()
    for name in cfg.recipe_names:
      r = cfg.finetune.recipes[name]
      eps = _collected(cfg, robot, ccfg, workdir, data_keys, steps, r.action_noise)[0] if r.action_noise else base
      eps = mppi_corpus.select_best(eps, r.keep) + (windows if r.sampled else [])
      tag, start = _data_tag(r), pretrained
      for k in range(1, r.rounds + 1):
        run_tag = f"{tag}_iter{k}" if k > 1 else tag  # round 1 is the one-round recipe of the same data
        cdir, env, n_train = _data_env(cfg, robot, ccfg, workdir, eps, f"{model}_{run_tag}" if k > 1 else tag)
        steps_lr = "" if _schedule(cfg, r) == _schedule(cfg, {}) else "_s%d_lr%g" % _schedule(cfg, r)
        run_dir = os.path.join(workdir, robot, "finetune", f"{model}-{run_tag}{steps_lr}")
        start = _finetune(cfg, r, start, cdir, env, n_train, run_dir)
        if k < r.rounds:  # the fine-tuned model's own episodes from the collection start states join the data
          d = os.path.join(workdir, robot, "collect", f"wm-{model}-{run_tag}")
          run_row(wcfg, "world_model", d, data_keys, steps, f"{robot} {model} {run_tag} data", start)
          store = episode_store.EpisodeStore(d)
          eps = eps + [store.trajectory(i) for i in range(len(data_keys))]
      run_row(
        wcfg, "world_model", _row_dir(workdir, robot, f"wm-{model}-{name}"), keys, steps,
        f"{robot} {model} fine-tuned ({name})", start, check,
      )  # fmt: skip
      report()


def run(cfg, workdir: str) -> dict:
  from westworld_jax.control import table_report  # pylint: disable=import-outside-toplevel

  unknown = [r for r in cfg.robots if r not in cfg.control]
  if unknown:
    raise ValueError(f"robots {unknown} have no control config: choose from {sorted(cfg.control)}")
  missing = [n for n in cfg.recipe_names if n not in cfg.finetune.recipes]
  if missing:
    raise ValueError(f"recipe_names {missing} are not in finetune.recipes {sorted(cfg.finetune.recipes)}")
  os.makedirs(workdir, exist_ok=True)
  report = lambda: table_report.write(cfg, workdir)
  for robot in cfg.robots:
    run_robot(cfg, robot, workdir, report)
  return report()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cfg = _CONFIG.value
  render = any(cfg.control[r].render.enabled for r in cfg.robots if r in cfg.control)
  experiment.prepare_process("no", render=render, physics="auto")
  workdir = _WORKDIR.value or os.path.join("workdirs", "control_table", cfg.variant)
  out = run(cfg, workdir)
  print(f"wrote {out['results']} and {out['markdown']}")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/control_table.py", "Control table config file.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default workdirs/control_table/<variant>).")
  cli.run(main)
