"""Why a world model's first predicted step can be worse than holding the last observation: its error per
future step and per channel kind beside hold-last's, and the read-out's quantisation floor per bin count.

A model trained with one-hot bin targets (loss.py, "bin", as upstream) is best off predicting the centre
of the bin that holds the next value: a mean error of 1/(4K) of a channel's range with K bins, whatever
the dynamics. Where a channel moves less than that in one step, holding the last observation wins the
first step. The floor is measured on the same targets (mean |x - centre(bin(x))|) for several K.

On a DEV set: the held-out (val) episodes of the pretraining environments (never the test robots), in
each environment's normalised units, x100 (the tables' scale):

  python benchmarks/first_step.py --corpus corpus/cpu --checkpoint westworld=workdirs/cpu/pretrain/westworld \
      --checkpoint trajworld=workdirs/cpu/pretrain/trajworld [--envs 0] [--out DIR]

Writes DIR/results.json, DIR/results.md and DIR/first_step.png.
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import numpy as np

from westworld_jax import evaluation as ev
from westworld_jax.data import shards

FLOOR_BINS = (32, 64, 128, 256)


def model_windows(ckpt, corpus: str, env: str, horizon: int) -> tuple[np.ndarray, np.ndarray]:
  """(truth, prediction) [N, history + horizon, Co] of every held-out window, normalised."""
  evaluator = ev.Evaluator.for_checkpoint(ckpt, batch_size=32, horizon=horizon)
  res = evaluator.evaluate_env(corpus, env, keep_examples=10**9)
  full = [(o, p) for o, p in res.examples if len(o) == ckpt.model.history + horizon]
  return np.stack([o for o, _ in full]), np.stack([p for _, p in full])


def bin_floor(x: np.ndarray, k: int) -> np.ndarray:
  """|x - centre of its bin| with k uniform bins on [0, 1] (the best one-hot read-out's error)."""
  v = np.clip(x, 0.0, 1.0)
  centre = (np.clip(np.floor(v * k), 0, k - 1) + 0.5) / k
  return np.abs(v - centre)


def measure(ckpts: dict, corpus: str, envs: list[str], horizon: int) -> dict:
  """Per environment: per-kind first-step MAE x100 of each model and hold-last, per-step MAE, floors."""
  out = {}
  for env in envs:
    meta = shards.load_metadata(os.path.join(corpus, env))
    by_kind = collections.defaultdict(list)  # kind -> its channels
    for i, c in enumerate(meta["robot"]["obs_channels"]):
      by_kind[c["kind"]].append(i)
    rec = {"robot": meta["robot"]["name"], "kinds": {k: {"channels": len(idx)} for k, idx in by_kind.items()}}
    rec["per_step"] = {}
    truth = None
    for label, ckpt in ckpts.items():
      obs, pred = model_windows(ckpt, corpus, env, horizon)
      h = ckpt.model.history
      err = np.abs(pred[:, h:] - obs[:, h:])  # [N, F, Co]
      rec["per_step"][label] = (100 * err.mean((0, 2))).tolist()
      for kind, idx in by_kind.items():
        rec["kinds"][kind][label] = 100 * float(err[:, 0, idx].mean())
      truth = (obs, h)
    obs, h = truth
    hold = np.abs(obs[:, h:] - obs[:, h - 1 : h])
    rec["per_step"]["hold_last"] = (100 * hold.mean((0, 2))).tolist()
    rec["windows"] = int(len(obs))
    for kind, idx in by_kind.items():
      k = rec["kinds"][kind]
      k["hold_last"] = 100 * float(hold[:, 0, idx].mean())
      for nb in FLOOR_BINS:
        k[f"floor_{nb}"] = 100 * float(bin_floor(obs[:, h, idx], nb).mean())
    out[env] = rec
  return out


def pooled(results: dict, labels: list[str]) -> dict:
  """Over all environments: first-step MAE x100 per channel kind, each channel weighing alike."""
  keys = labels + ["hold_last"] + [f"floor_{nb}" for nb in FLOOR_BINS]
  acc = collections.defaultdict(lambda: collections.defaultdict(float))
  for rec in results.values():
    for kind, vals in rec["kinds"].items():
      acc[kind]["n"] += vals["channels"]
      for key in keys:
        acc[kind][key] += vals[key] * vals["channels"]
  return {kind: {**{k: d[k] / d["n"] for k in keys}, "n": int(d["n"])} for kind, d in acc.items()}


def report(results: dict, labels: list[str], out: str, note: str) -> None:
  kinds = pooled(results, labels)
  cols = labels + ["hold_last"] + [f"floor_{nb}" for nb in FLOOR_BINS]
  lines = [
    "# First predicted step on the dev set (pretraining environments' held-out episodes)",
    "",
    note,
    "",
    "## First-step MAE x100 by channel kind (mean over channels of all dev environments)",
    "",
    "| kind | channels | " + " | ".join(cols) + " |",
    "|---|---|" + "---|" * len(cols),
  ]
  for kind, d in sorted(kinds.items(), key=lambda kv: -kv[1]["n"]):
    lines.append(f"| {kind} | {d['n']} | " + " | ".join(f"{d[c]:.2f}" for c in cols) + " |")
  allk = {c: np.mean([r["per_step"][c][0] for r in results.values()]) for c in labels + ["hold_last"]}
  lines += [
    "",
    "## MAE x100 per future step (mean over dev environments)",
    "",
    "| step | " + " | ".join(labels + ["hold_last"]) + " |",
    "|---|" + "---|" * (len(labels) + 1),
  ]
  steps = len(next(iter(results.values()))["per_step"]["hold_last"])
  for s in (0, 1, 2, 4, 8, steps - 1):
    if s < steps:
      row = [np.mean([r["per_step"][c][s] for r in results.values()]) for c in labels + ["hold_last"]]
      lines.append(f"| {s + 1} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
  lines += ["", "First step, all channels: " + ", ".join(f"{c} {v:.2f}" for c, v in allk.items()), ""]
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"environments": results, "by_kind": kinds, "note": note}, f, indent=1)
  _plot(results, kinds, labels, out)
  print("\n".join(lines))


def _plot(results: dict, kinds: dict, labels: list[str], out: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
  names = sorted(kinds, key=lambda k: -kinds[k]["n"])
  x = np.arange(len(names))
  cols = labels + ["hold_last", "floor_32", "floor_64"]
  w = 0.8 / len(cols)
  for i, c in enumerate(cols):
    a.bar(x + i * w, [kinds[k][c] for k in names], w, label=c)
  a.set_xticks(x + 0.4, names, rotation=30, ha="right", fontsize=7)
  a.set_ylabel("first-step MAE x100")
  a.legend(fontsize=7)
  steps = np.arange(1, len(next(iter(results.values()))["per_step"]["hold_last"]) + 1)
  for c in labels + ["hold_last"]:
    b.plot(steps, np.mean([r["per_step"][c] for r in results.values()], 0), label=c)
  b.set_xlabel("future step")
  b.set_ylabel("MAE x100 (dev mean)")
  b.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "first_step.png"), dpi=90)
  plt.close(fig)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--corpus", default="corpus/cpu")
  p.add_argument("--checkpoint", action="append", required=True, help="label=training workdir (repeatable)")
  p.add_argument("--envs", type=int, default=0, help="the first N of the first checkpoint's environments (0: all)")
  p.add_argument("--horizon", type=int, default=24)
  p.add_argument("--out", default="benchmarks/results/first_step")
  args = p.parse_args()
  ckpts = {}
  for spec in args.checkpoint:
    label, _, path = spec.partition("=")
    ckpts[label] = ev.load_checkpoint(path, label)
  envs = sorted(next(iter(ckpts.values())).trained_envs)
  envs = envs[: args.envs] if args.envs else envs
  os.makedirs(args.out, exist_ok=True)
  results = measure(ckpts, args.corpus, envs, args.horizon)
  note = (
    f"{len(envs)} dev environments, {sum(r['windows'] for r in results.values())} windows of "
    f"history + {args.horizon}; checkpoints: "
    + ", ".join(f"{k} ({c.workdir}, step {c.step}, {c.model.config.num_bins} bins)" for k, c in ckpts.items())
  )
  report(results, list(ckpts), args.out, note)


if __name__ == "__main__":
  main()
