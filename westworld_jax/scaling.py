"""Scaling with the number of pretraining environments:
`python -m westworld_jax.scaling --config experiments/scaling.py[:variant] [--workdir OUT]`.

For every model in `models`, N in `num_envs` (0 = all) and seed: pretrain (training.loop.train) on the
first N of `environments` with the same steps, batch and schedule for every N, then evaluate
(westworld_jax.evaluation's protocol) on
  heldout  the fixed held-out robots `eval_environments` (never trained on; zero-shot),
  anchor   the val episodes of the first `anchor` environments (trained on in every run; fixed),
  trained  the val episodes of the N environments of that run (grows with N; negative transfer shows
           here as a dense model's error rising with N).
Every run writes OUT/runs/<model>-n<N>-s<seed>/scaling_record.json; a rerun skips finished runs, and the
report (OUT/results.json, results.md, plots/error_vs_num_envs.png) gathers every record under OUT/runs,
so later invocations (e.g. more models at N = all) add to the same report. Beside the models, each set
reports holding the last observation (OUT/hold_last/n<N>.json, on the windows of an N run's checkpoint).
"""

from __future__ import annotations

import glob
import json
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from westworld_jax import evaluation as ev
from westworld_jax.training import corpus as corpus_lib
from westworld_jax.training import loop
from westworld_jax import cli

_CONFIG = _WORKDIR = None  # flags, defined only when run as a program
RECORD = "scaling_record.json"
SETS = ("heldout", "anchor", "trained")
HOLD = ev.HOLD_LAST_LABEL


def plan(cfg) -> tuple[list[str], list[int]]:
  envs = list(cfg.environments) or corpus_lib.training_environments(cfg.pretrain.data)
  ns = sorted({len(envs) if int(n) == 0 else int(n) for n in cfg.num_envs})
  if ns[0] < 1 or ns[-1] > len(envs):
    raise ValueError(f"num_envs {list(cfg.num_envs)} must lie in 1..{len(envs)} (0 = all {len(envs)})")
  return envs, ns


def _eval(cfg, ckpt, envs, require_unseen) -> dict | None:
  if not envs:
    return None
  res = ev.evaluate_checkpoint(
    ckpt,
    cfg.pretrain.data.corpus_dir,
    envs,
    require_unseen=require_unseen,
    batch_size=cfg.eval.batch_size,
    max_windows=cfg.eval.max_windows,
    keep_examples=cfg.eval.plot_windows if require_unseen else 0,
  )
  return ev.env_summaries(res), res


def run_dir(outdir: str, model: str, num_envs: int, seed: int) -> str:
  return os.path.join(outdir, "runs", f"{model}-n{num_envs:03d}-s{seed}")


def eval_sets(cfg, envs: list[str]) -> list[tuple[str, list[str], bool]]:
  """(set name, environments, must be unseen) for a run on `envs`: heldout, anchor, trained."""
  return [
    ("heldout", list(cfg.eval_environments), True),
    ("anchor", list(envs[: cfg.anchor]) if cfg.anchor else [], False),
    ("trained", list(corpus_lib.validation_environments(cfg.pretrain.data, envs)), False),
  ]


def run_one(cfg, model: str, envs: list[str], seed: int, outdir: str) -> dict:
  workdir = run_dir(outdir, model, len(envs), seed)
  path = os.path.join(workdir, RECORD)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  rc = cfg.pretrain.copy_and_resolve_references()
  rc.model = cfg.model_configs[model]
  rc.data.environments = tuple(envs)
  rc.seed = int(seed)
  t0 = time.perf_counter()
  result = loop.train_to_end(rc, workdir)
  seconds = time.perf_counter() - t0
  ckpt = ev.load_checkpoint(workdir, model)
  rec = {
    "model": model,
    "num_envs": len(envs),
    "seed": int(seed),
    "environments": list(envs),
    "workdir": workdir,
    "step": ckpt.step,
    "train_seconds": seconds,
    "final_loss": next((r.get("loss_mean", r.get("loss")) for r in reversed(result.rows) if "loss" in r), None),
    "params": ev.run_record(ckpt, {})["params"],
  }
  t1 = time.perf_counter()
  for name, es, unseen in eval_sets(cfg, envs):
    out = _eval(cfg, ckpt, es, unseen)
    rec[name] = out[0] if out else None
    if out and name == "heldout":
      for r in out[1].values():
        ev.plot_examples(os.path.join(outdir, "examples"), f"{model}-n{len(envs)}", r, ckpt.model.history)
  rec["eval_seconds"] = time.perf_counter() - t1
  ev.write_json(path, rec)
  return rec


def hold_last(cfg, outdir: str, records: list[dict]) -> dict[int, dict]:
  """N -> {set: summaries} of the hold-last reference on each set's windows (cached per N)."""
  out = {}
  for n in sorted({r["num_envs"] for r in records}):
    path = os.path.join(outdir, "hold_last", f"n{n:03d}.json")
    if not os.path.exists(path):
      rec = next(r for r in records if r["num_envs"] == n)
      ckpt = ev.hold_last_reference(ev.load_checkpoint(run_dir(outdir, rec["model"], n, rec["seed"])))
      res = {name: _eval(cfg, ckpt, es, False) for name, es, _ in eval_sets(cfg, rec["environments"])}
      ev.write_json(path, {name: _without_steps(r[0]) if r else None for name, r in res.items()})
    with open(path) as f:
      out[n] = json.load(f)
  return out


def report(cfg, outdir: str, records: list[dict], hold: dict[int, dict] | None = None) -> dict:
  models = list(dict.fromkeys(r["model"] for r in sorted(records, key=lambda r: r["model"])))
  ns = sorted({r["num_envs"] for r in records})
  get = lambda rec, s: None if not rec.get(s) else rec[s]["all"]["mae_x100"]
  cell = {}
  for r in records:
    cell.setdefault((r["model"], r["num_envs"]), []).append(r)
  for n, h in (hold or {}).items():
    cell[(HOLD, n)] = [h]
  cols = models + ([HOLD] if hold else [])
  md = [
    "# Scaling with the number of pretraining environments",
    "",
    f"Pretraining on the first N environments of a fixed list (same steps for every N: "
    f"{cfg.pretrain.total_steps}, batch {cfg.pretrain.data.batch_size}). MAE x100 (pooled over valid elements, "
    "normalised space; lower is better), "
    + ("mean ± sample std over seeds." if len(cfg.seeds) > 1 else "one seed.")
    + "",
    "",
    f"- heldout: fixed zero-shot robots {list(cfg.eval_environments)}",
    f"- anchor: val episodes of the first {cfg.anchor} environment(s) (trained on in every run)",
    "- trained: val episodes of the run's own N environments (the set grows with N)",
    "",
  ]
  for s in SETS:
    md += [
      f"## {s}",
      "",
      ev.markdown_table(
        [str(n) for n in ns],
        cols,
        lambda n, m: [get(r, s) for r in cell.get((m, int(n)), []) if get(r, s) is not None],
        "N envs",
        bold_min="row",
      ),
      "",
    ]
  md += ["## Runs", "", "| model | N | seed | steps | train s | eval s | final loss |", "|---|---|---|---|---|---|---|"]
  for r in sorted(records, key=lambda r: (r["model"], r["num_envs"], r["seed"])):
    loss = f"{r['final_loss']:.3f}" if r.get("final_loss") is not None else "—"
    md.append(
      f"| {r['model']} | {r['num_envs']} | {r['seed']} | {r['step']} | {r['train_seconds']:.0f} | "
      f"{r['eval_seconds']:.0f} | {loss} |"
    )
  plot = plot_scaling(os.path.join(outdir, "plots", "error_vs_num_envs.png"), cols, ns, cell, get)
  md += ["", f"![error vs N](plots/{os.path.basename(plot)})", ""]
  os.makedirs(outdir, exist_ok=True)
  with open(os.path.join(outdir, "results.md"), "w") as f:
    f.write("\n".join(md))
  summary = {
    m: {
      s: {
        str(n): ev.mean_std([get(r, s) for r in cell.get((m, n), []) if get(r, s) is not None])
        for n in ns
        if (m, n) in cell
      }
      for s in SETS
    }
    for m in cols
  }
  slim = [{**r, "trained": _without_steps(r.get("trained"))} for r in records]  # full detail stays in runs/
  out = {
    "title": "scaling",
    "protocol": ev.PROTOCOL,
    "summary_mae_x100_mean_std": summary,
    "records": slim,
    "config": cfg.to_dict(),
  }
  ev.write_json(os.path.join(outdir, "results.json"), out)
  return out


def _without_steps(summaries: dict | None) -> dict | None:
  if not summaries:
    return summaries
  drop = lambda d: {k: v for k, v in d.items() if not k.endswith("_by_step")}
  return {
    "envs": {e: drop(v) for e, v in summaries["envs"].items()},
    "robots": {e: drop(v) for e, v in summaries["robots"].items()},
    "all": drop(summaries["all"]),
  }


def plot_scaling(path, models, ns, cell, get) -> str:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(SETS), figsize=(4.2 * len(SETS), 3.6), squeeze=False)
  for ax, s in zip(axes[0], SETS):
    for m in models:
      xs, ys, es = [], [], []
      for n in ns:
        vals = [get(r, s) for r in cell.get((m, n), []) if get(r, s) is not None]
        if vals:
          mu, sd = ev.mean_std(vals)
          xs.append(n)
          ys.append(mu)
          es.append(sd)
      if xs and m == HOLD:
        ax.plot(xs, ys, "k--", lw=1.2, label="hold last obs")
      elif xs:
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, lw=1.4, label=m)
    ax.set_xscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns], fontsize=7, rotation=60)  # 30 and 34 sit close on a log axis
    ax.set_xlabel("pretraining environments N")
    ax.set_ylabel("MAE x100")
    ax.set_title(s, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return ev.save_figure(fig, path)


def scaling(cfg, outdir: str) -> dict:
  envs, ns = plan(cfg)
  corpus = cfg.pretrain.data.corpus_dir
  ev.ensure_environments(corpus, envs, cfg.pretrain.data.collect)
  ev.ensure_environments(corpus, list(cfg.eval_environments), cfg.get("eval_collect"))
  for model in cfg.models:
    if model not in cfg.model_configs:
      raise ValueError(f"model {model!r} has no entry in model_configs ({list(cfg.model_configs)})")
    for n in ns:
      for seed in cfg.seeds:
        rec = run_one(cfg, model, envs[:n], seed, outdir)
        logging.info(
          "%s N=%d seed %d: heldout MAE x100 %s",
          model,
          n,
          seed,
          rec["heldout"]["all"]["mae_x100"] if rec.get("heldout") else None,
        )
  records = []
  for path in sorted(glob.glob(os.path.join(outdir, "runs", "*", RECORD))):
    with open(path) as f:
      records.append(json.load(f))
  return report(cfg, outdir, records, hold_last(cfg, outdir, records))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  t0 = time.perf_counter()
  scaling(_CONFIG.value, _WORKDIR.value)
  print(open(os.path.join(_WORKDIR.value, "results.md")).read())
  print(f"wrote {_WORKDIR.value}/results.json, results.md, plots/ ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/scaling.py", "Scaling config file.")
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/scaling", "Output directory (runs, results, plots).")
  cli.run(main)
