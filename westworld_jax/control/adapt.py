"""World-model fine-tuning on control data, as the authors do:

  python -m westworld_jax.control.adapt --config experiments/control.py:VARIANT --checkpoint PRETRAINED
      --workdir OUT

  1. collect    cfg.collect.episodes closed-loop oracle-MPPI episodes of cfg.task (cfg.mppi,
                cfg.collect.n_envs at a time, cfg.episode_len steps, on cfg.physics: C MuJoCo on a
                CPU, MJX on an accelerator); the best cfg.collect.keep_fraction
                by return become corpus environment '<robot>-mppi_oracle' in OUT/corpus (or
                cfg.collect.corpus_dir) -- control/mppi_corpus.py;
  2. fine-tune  training.loop.train from PRETRAINED's weights with its model and recipe
                (training/finetune.py: a fresh optimizer, cfg.finetune.steps steps at
                cfg.finetune.lr, batch cfg.finetune.batch_size) on the kept training episodes -> OUT/model,
                a training workdir: `python -m westworld_jax.control --checkpoint OUT/model` loads it, and
                its data_stats.json holds the robot's normalisation (the kept episodes' min-max);
  3. compare    (cfg.finetune.compare) world-model MPPI with the pretrained model (normalised with the
                same control-data stats) and with the fine-tuned one, on the same start states ->
                OUT/control_pretrained/ and OUT/control_finetuned/ (summary.json, video, ... as the CLI).
OUT/finetune.json summarises the three. A rerun reuses the collected data (unless
cfg.collect.overwrite) and resumes or skips the finished training run.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from westworld_jax.control import experiment  # imports neither jax nor mujoco (pinning comes first)
from westworld_jax import cli

_CONFIG = _WORKDIR = _CHECKPOINT = _PIN_CPU = None  # flags, defined only when run as a program


def collect(cfg, corpus_dir: str) -> dict:
  """Step 1: oracle-MPPI episodes -> the best ones as a corpus environment (reused when present)."""
  # These load numpy, jax and mujoco: only after main has pinned the CPU (experiment.prepare_process).
  from westworld_jax.control import mppi_corpus  # pylint: disable=import-outside-toplevel
  from westworld_jax.control import planners  # pylint: disable=import-outside-toplevel
  from westworld_jax.data import shards  # pylint: disable=import-outside-toplevel

  task = planners.protocol_task(cfg)  # with the config's reference cost, if any
  mcfg = planners.mppi_config("oracle", cfg)
  env = f"{task.robot.name}-mppi_oracle"
  env_dir = os.path.join(corpus_dir, env)
  t0 = time.perf_counter()
  if os.path.exists(os.path.join(env_dir, shards.METADATA)) and not cfg.collect.overwrite:
    logging.info("reusing the control data in %s (--config.collect.overwrite=True recollects)", env_dir)
    out = {"env": env, "reused": True}
  else:
    out = mppi_corpus.collect(
      task,
      mcfg,
      corpus_dir,
      cfg.collect.episodes,
      cfg.episode_len or task.episode_len,
      n_envs=cfg.collect.n_envs,
      keep_fraction=cfg.collect.keep_fraction,
      seed=cfg.seed,
      val_fraction=cfg.collect.val_fraction,
      overwrite=cfg.collect.overwrite,
      physics=cfg.physics,
      expert=planners.expert_actions(task, mcfg, task.num_act),
    )
  meta = shards.load_metadata(env_dir)
  out.update(
    corpus_dir=os.path.abspath(corpus_dir),
    seconds=time.perf_counter() - t0,
    train_episodes=sum(not e["val"] for e in meta["episodes"]),
    val_episodes=sum(bool(e["val"]) for e in meta["episodes"]),
    episode_lengths=[e["length"] for e in meta["episodes"]],
  )
  return out


def finetune_model(cfg, pretrained: str, corpus_dir: str, env: str, episodes: int, workdir: str) -> dict:
  """Step 2: the pretrained run's model and recipe, from its weights, on the control data."""
  from westworld_jax.training import finetune, loop  # pylint: disable=import-outside-toplevel

  f = cfg.finetune
  rc = finetune.finetune_config(
    pretrained,
    env=env,
    corpus_dir=os.path.abspath(corpus_dir),
    episodes=episodes,
    steps=f.steps,
    lr=f.lr,
    warmup_steps=f.warmup_steps,
    final_lr_fraction=f.final_lr_fraction,
    batch_size=f.batch_size,
    seed=cfg.seed,
  )
  window = rc.data.history + rc.data.horizon
  if (cfg.episode_len or 0) and cfg.episode_len < window:
    raise ValueError(
      f"episodes of {cfg.episode_len} steps are shorter than the model's training windows "
      f"({window} = history {rc.data.history} + horizon {rc.data.horizon}): raise episode_len"
    )
  t0 = time.perf_counter()
  result = loop.train(rc, workdir)  # resumes / returns at once when the run is already finished
  losses = [r["loss"] for r in result.rows if "loss" in r]
  return {
    "workdir": os.path.abspath(workdir),
    "pretrained": os.path.abspath(pretrained),
    "steps": result.step,
    "lr": f.lr,
    "batch_size": f.batch_size,
    "loss_first": losses[0] if losses else None,
    "loss_last": losses[-1] if losses else None,
    "seconds": time.perf_counter() - t0,
  }


def _check_horizon(cfg, pretrained: str) -> None:
  """Before collecting: the comparison's world-model MPPI must fit the model's window."""
  # This loads jax: only after main has pinned the CPU (experiment.prepare_process).
  from westworld_jax.control import planners  # pylint: disable=import-outside-toplevel
  from westworld_jax.training.run_files import read_run_config  # pylint: disable=import-outside-toplevel

  model = read_run_config(pretrained)["model"]
  history, max_window_len = model.get("history"), model.get("max_window_len")
  horizon = planners.mppi_config("world_model", cfg).horizon
  if cfg.finetune.compare and history and max_window_len and history + horizon > max_window_len:
    raise ValueError(
      f"mppi.horizon={horizon} + the model's history {history} exceeds its max_window_len="
      f"{max_window_len}: the comparison's world-model MPPI cannot run; pass "
      f"--config.mppi.horizon={max_window_len - history} or --config.finetune.compare=False"
    )


def run(cfg, workdir: str, pretrained: str) -> dict:
  if not pretrained:
    raise ValueError(
      "fine-tuning needs --checkpoint PRETRAINED (a training workdir, e.g. from "
      "`python -m westworld_jax.train --config experiments/pretrain.py:tiny --workdir DIR`)"
    )
  _check_horizon(cfg, pretrained)
  os.makedirs(workdir, exist_ok=True)
  corpus_dir = cfg.collect.corpus_dir or os.path.join(workdir, "corpus")
  summary = {"task": cfg.task, "config": cfg.to_dict()}
  summary["collect"] = col = collect(cfg, corpus_dir)
  logging.info("control data: %s", col)
  model_dir = os.path.join(workdir, "model")
  summary["finetune"] = finetune_model(cfg, pretrained, corpus_dir, col["env"], col["train_episodes"], model_dir)
  logging.info("fine-tuned: %s", summary["finetune"])
  if cfg.finetune.compare:
    ccfg = cfg.copy_and_resolve_references()
    ccfg.policies = ("world_model",)
    ccfg.collect.corpus_dir = ""  # the comparison collects nothing
    ccfg.stats.corpus_env = ccfg.stats.corpus_env or os.path.join(corpus_dir, col["env"])
    summary["compare"] = {}
    for label, ckpt in (("pretrained", pretrained), ("finetuned", model_dir)):
      out = os.path.join(workdir, f"control_{label}")
      s = experiment.run(ccfg, out, ckpt)["policies"]["world_model"]
      summary["compare"][label] = {
        "workdir": os.path.abspath(out),
        "stats_from": s.get("stats_from"),
        **{k: s.get(k) for k in ("return_mean", "return_std", "replan_ms_median", "video")},
      }
  with open(os.path.join(workdir, "finetune.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def _fmt(x) -> str:
  return "-" if x is None else f"{x:.3f}"  # None: the run had already finished (a rerun)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cfg = _CONFIG.value
  experiment.prepare_process(_PIN_CPU.value, render=cfg.render.enabled and cfg.finetune.compare, physics=cfg.physics)
  workdir = _WORKDIR.value or os.path.join("workdirs", "control_finetune", cfg.task)
  s = run(cfg, workdir, _CHECKPOINT.value)
  c, f = s["collect"], s["finetune"]
  lines = [
    f"control data: {c['env']} in {c['corpus_dir']}: {c['train_episodes']} training episodes"
    + (
      f" kept of {c['episodes_run']} (returns: mean {c['return_mean_all']:.1f}, best {c['return_max']:.1f})"
      if "episodes_run" in c
      else " (reused)"
    ),
    f"fine-tuned {f['steps']} steps from {f['pretrained']}: loss {_fmt(f['loss_first'])} -> "
    f"{_fmt(f['loss_last'])} ({f['seconds']:.0f}s) -> {f['workdir']}",
  ]
  for label, r in s.get("compare", {}).items():
    lines.append(
      f"world-model MPPI, {label}: return {r['return_mean']:.1f} ± {r['return_std']:.1f}, "
      f"replan {r['replan_ms_median']:.1f} ms"
    )
  lines.append(
    f"wrote {os.path.join(workdir, 'finetune.json')}; control with the fine-tuned model: "
    f"python -m westworld_jax.control --config experiments/control.py:<variant> --checkpoint {f['workdir']}"
  )
  print("\n".join(lines))


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/control.py:tiny", "Control config file.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default workdirs/control_finetune/<task>).")
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Pretrained training workdir to fine-tune (required).")
  _PIN_CPU = flags.DEFINE_enum(
    "pin_cpu",
    "auto",
    ["auto", "yes", "no"],
    "Pin the process to one core before importing jax (see control/__main__.py).",
  )
  cli.run(main)
