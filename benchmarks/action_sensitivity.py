"""Do world models respond to the actions a planner varies? MPPI can only order candidate plans
that share one history if the model's predictions differ between them as the physics' do.

The data are the control table's MPPI-sampled windows (control/sampled_rollouts.py): at a real
state, `count` action sequences drawn as MPPI draws its candidates, simulated in C MuJoCo, each
a window of the real history + the simulated future. For every group of candidates sharing one
history it compares, per future step, the spread of the model's predictions across candidates with
the physics' spread (their ratio: 1 = as action-sensitive as the physics, 0 = blind to actions),
the correlation across candidates of predicted and true deviations from the group mean, and the
prediction error beside holding the last observation. All in units of each channel's range.

  python benchmarks/action_sensitivity.py --env_dir workdirs/control_table/cpu/hopper/corpus/hopper-mppi_oracle_sampled \
      --robot hopper --model westworld=westworld-cpu --model trajworld=trajworld-cpu [--out DIR]

Writes DIR/results.json, DIR/results.md and DIR/sensitivity.png (spread ratio per future step).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

import westworld_jax as ww
from westworld_jax.data import shards


def groups(env_dir: str, history: int, split: str = "val") -> list[dict]:
  """Candidate groups: windows (obs, act) whose first `history` observations are identical; `split`
  'val' keeps the environment's held-out windows (fine-tuned models trained on the others), 'all' all."""
  meta = shards.load_metadata(env_dir)
  lengths = [e["length"] for e in meta["episodes"]]
  window = max(set(lengths), key=lengths.count)  # the sampled windows' length (the rest: executed episodes)
  out: dict[bytes, list[dict]] = {}
  for ep in shards.read_episodes(env_dir, split, meta):
    if len(ep["obs"]) == window:
      out.setdefault(np.asarray(ep["obs"][:history], np.float32).tobytes(), []).append(ep)
  return [
    {"obs": np.stack([e["obs"] for e in g]), "act": np.stack([e["act"] for e in g])} for g in out.values() if len(g) > 2
  ]


def measure(model, robot: str, gs: list[dict], history: int, data) -> dict:
  scale = np.ptp(data[0], axis=0) + 1e-8
  ratio, corr, err, hold = [], [], [], []
  for g in gs:
    obs, act = g["obs"], g["act"]
    fut = obs[:, history:]
    pred = model.predict(robot, obs[:, :history], act[:, :history], act[:, history:], data=data)
    dp, dt = (pred - pred.mean(0)) / scale, (fut - fut.mean(0)) / scale  # [K, F, Co]
    ratio.append(dp.std(0).mean(-1) / np.maximum(dt.std(0).mean(-1), 1e-8))  # [F]
    num = (dp * dt).sum(0)
    den = np.sqrt((dp**2).sum(0) * (dt**2).sum(0)) + 1e-12
    corr.append((num / den).mean(-1))  # [F]: mean over channels of the across-candidate correlation
    err.append((np.abs(pred - fut) / scale).mean((0, 2)))
    hold.append((np.abs(obs[:, history - 1 : history] - fut) / scale).mean((0, 2)))
  f = lambda xs: np.mean(np.stack(xs), 0)
  return {
    "spread_ratio": f(ratio).tolist(),
    "corr": f(corr).tolist(),
    "mae": f(err).tolist(),
    "hold_mae": f(hold).tolist(),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--env_dir", required=True)
  p.add_argument("--robot", required=True)
  p.add_argument("--model", action="append", required=True, help="label=shipped name or workdir (repeat)")
  p.add_argument("--max_groups", type=int, default=200)
  p.add_argument("--split", choices=("val", "all"), default="val", help="the held-out windows, or all")
  p.add_argument("--out", default="benchmarks/results/action_sensitivity")
  a = p.parse_args()
  eps = shards.read_episodes(a.env_dir)
  data = tuple(np.concatenate([e[k] for e in eps]) for k in ("obs", "act"))  # the planner's normalisation range
  res = {"env_dir": a.env_dir, "robot": a.robot, "split": a.split, "models": {}}
  for spec in a.model:
    label, _, src = spec.partition("=")
    model = ww.load(src)
    gs = groups(a.env_dir, model.history, a.split)[: a.max_groups]
    res["models"][label] = {"source": src, "groups": len(gs), "candidates": int(np.mean([len(g["obs"]) for g in gs]))}
    res["models"][label].update(measure(model, a.robot, gs, model.history, data))
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "results.json"), "w") as f:
    json.dump(res, f, indent=1)
  steps = (1, 6, 12, 24)
  lines = [
    f"# Action sensitivity on {a.robot} MPPI candidates ({os.path.basename(a.env_dir)})",
    "",
    "Per future step (1 = the first predicted): spread ratio = model's spread across candidates / the physics'; "
    "corr = correlation across candidates of predicted and true deviations from the group mean; MAE x100 and "
    "hold-last MAE x100 in units of each channel's range.",
    "",
    "| model | groups x candidates | "
    + " | ".join(f"ratio @{s} | corr @{s}" for s in steps)
    + " | MAE x100 (all) | hold-last |",
    "|---|---|" + "---|---|" * len(steps) + "---|---|",
  ]
  for label, r in res["models"].items():
    cells = " | ".join(f"{r['spread_ratio'][s - 1]:.2f} | {r['corr'][s - 1]:.2f}" for s in steps)
    lines.append(
      f"| {label} | {r['groups']} x {r['candidates']} | {cells} | {100 * np.mean(r['mae']):.2f} | {100 * np.mean(r['hold_mae']):.2f} |"
    )
  with open(os.path.join(a.out, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
  for label, r in res["models"].items():
    ax[0].plot(np.arange(1, len(r["spread_ratio"]) + 1), r["spread_ratio"], label=label)
    ax[1].plot(np.arange(1, len(r["corr"]) + 1), r["corr"], label=label)
  ax[0].axhline(1.0, color="k", lw=0.5)
  ax[0].set(xlabel="future step", ylabel="spread ratio (model / physics)")
  ax[1].set(xlabel="future step", ylabel="corr across candidates")
  ax[0].legend()
  fig.tight_layout()
  fig.savefig(os.path.join(a.out, "sensitivity.png"), dpi=100)


if __name__ == "__main__":
  main()
