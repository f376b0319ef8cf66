"""Held-out error against training steps: `python -m westworld_jax.learning_curve --config
experiments/learning_curve.py[:cpu|tiny] --workdir DIR`.

Trains the configured model once per seed (a rerun resumes and reuses finished evaluations), then
evaluates every saved checkpoint zero-shot on `eval_environments` with the protocol of
westworld_jax/evaluation, beside the hold-last-observation reference. Writes DIR/results.json
(per seed, step and robot: MAE/MSE x100 and the error of the first predicted step), results.md
(mean ± std over seeds) and plots/learning_curve.png.
"""

from __future__ import annotations

import json
import os

from absl import flags, logging
from ml_collections import config_flags

from westworld_jax import cli
from westworld_jax import evaluation as ev
from westworld_jax import inference
from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import loop
from westworld_jax.training.run_files import read_run_config


def _errors(ckpt: ev.Checkpoint, cfg) -> dict:
  """{robot: {mae_x100, mse_x100, first_step_mae_x100}} on the held-out environments."""
  res = ev.evaluate_checkpoint(
    ckpt,
    cfg.pretrain.data.corpus_dir,
    list(cfg.eval_environments),
    require_unseen=True,
    batch_size=cfg.eval.batch_size,
    max_windows=cfg.eval.max_windows,
    keep_examples=0,
  )
  out = {}
  for robot, s in ev.env_summaries(res)["robots"].items():
    out[robot] = {
      "mae_x100": s["mae_x100"],
      "mse_x100": s["mse_x100"],
      "first_step_mae_x100": ev.first_step_mae_x100(s),
    }
  return out


def run_seed(cfg, seed: int, outdir: str) -> tuple[list[dict], dict]:
  """Train (or resume) one seed; (records per checkpoint step, hold-last errors)."""
  workdir = os.path.join(outdir, "runs", f"{cfg.model}-s{seed}")
  rc = cfg.pretrain.copy_and_resolve_references()
  rc.model = cfg.model_configs[cfg.model]
  rc.seed = int(seed)
  loop.train_to_end(rc, workdir)
  ck = ckpt_lib.Checkpointer(workdir, async_save=False)
  steps = sorted(ck.manager.all_steps())
  ck.close()
  run_cfg = read_run_config(workdir)
  records, hold = [], None
  for step in steps:
    path = os.path.join(workdir, "curve", f"step-{step:07d}.json")
    if os.path.exists(path):
      with open(path) as f:
        records.append(json.load(f))
      continue
    model, params, stats = inference.load_for_inference(workdir, step)
    ckpt = ev.Checkpoint(cfg.model, workdir, model, params, stats, run_cfg, step)
    rec = {"model": cfg.model, "seed": int(seed), "step": int(step), "robots": _errors(ckpt, cfg)}
    ev.write_json(path, rec)
    records.append(rec)
    logging.info("seed %d step %d: %s", seed, step, rec["robots"])
  model, params, stats = inference.load_for_inference(workdir, steps[-1])
  hold = _errors(
    ev.hold_last_reference(ev.Checkpoint(cfg.model, workdir, model, params, stats, run_cfg, steps[-1])), cfg
  )
  return records, hold


def _plot(path: str, records: list[dict], hold: dict, robots: list[str], title: str) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(2, len(robots), figsize=(4.2 * len(robots), 6.4), squeeze=False)
  steps = sorted({r["step"] for r in records})
  for j, robot in enumerate(robots):
    for i, key in enumerate(("mae_x100", "first_step_mae_x100")):
      ax = axes[i, j]
      vals = [[r["robots"][robot][key] for r in records if r["step"] == s] for s in steps]
      mean = [sum(v) / len(v) for v in vals]
      ax.plot(steps, mean, "o-", label="model (mean over seeds)")
      for s, v in zip(steps, vals):
        ax.plot([s] * len(v), v, ".", color="grey", alpha=0.6)
      ax.axhline(hold[robot][key], color="k", ls="--", label="hold last obs")
      ax.set_title(f"{robot}: {'MAE' if i == 0 else 'first-step MAE'} x100")
      ax.set_xlabel("training step")
      if i == 0 and j == 0:
        ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  return ev.save_figure(fig, path)


def report(cfg, outdir: str, records: list[dict], hold: dict) -> dict:
  robots = sorted(hold)
  steps = sorted({r["step"] for r in records})
  title = (
    f"{cfg.model}: held-out error vs training steps ({len(cfg.seeds)} seed(s), batch "
    f"{cfg.pretrain.data.batch_size}, lr {cfg.pretrain.optim.lr}, cosine over {cfg.pretrain.total_steps})"
  )
  cell = lambda s, robot, key: [r["robots"][robot][key] for r in records if r["step"] == s]
  md = [
    f"# {title}",
    "",
    "Zero-shot on held-out robots (protocol: westworld_jax/evaluation). Cells: MAE x100 "
    "(mean ± sample std over seeds), first predicted step's MAE x100 in brackets.",
    "",
    "| step | " + " | ".join(robots) + " |",
    "|---" * (len(robots) + 1) + "|",
  ]
  for s in steps:
    md.append(
      f"| {s} | "
      + " | ".join(f"{ev.fmt(cell(s, r, 'mae_x100'))} ({ev.fmt(cell(s, r, 'first_step_mae_x100'))})" for r in robots)
      + " |"
    )
  md.append(
    "| hold last obs (reference) | "
    + " | ".join(f"{hold[r]['mae_x100']:.2f} ({hold[r]['first_step_mae_x100']:.2f})" for r in robots)
    + " |"
  )
  plot = _plot(os.path.join(outdir, "plots", "learning_curve.png"), records, hold, robots, title)
  md += ["", f"![learning curve](plots/{os.path.basename(plot)})", ""]
  os.makedirs(outdir, exist_ok=True)
  with open(os.path.join(outdir, "results.md"), "w") as f:
    f.write("\n".join(md))
  out = {
    "title": "learning_curve",
    "protocol": ev.PROTOCOL,
    "model": cfg.model,
    "seeds": list(cfg.seeds),
    "records": records,
    "hold_last": hold,
    "config": cfg.to_dict(),
  }
  ev.write_json(os.path.join(outdir, "results.json"), out)
  return out


def learning_curve(cfg, outdir: str) -> dict:
  ev.ensure_environments(cfg.pretrain.data.corpus_dir, cfg.eval_environments, cfg.eval_collect)
  records, hold = [], None
  for seed in cfg.seeds:
    recs, hold = run_seed(cfg, int(seed), outdir)
    records += recs
  return report(cfg, outdir, records, hold)


def main(argv):
  del argv
  out = learning_curve(_CONFIG.value, _WORKDIR.value)
  print(f"wrote {os.path.join(_WORKDIR.value, 'results.md')} ({len(out['records'])} evaluations)")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/learning_curve.py", "Learning-curve config.")
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/learning_curve", "Output directory (runs, results).")
  cli.run(main)
