"""The control table's report: results.json (one row per robot x policy x model x recipe),
results.md and plots/returns.png, from the finished episodes on disk (control/episode_store.py), so
that it can be rewritten after every row and by any process sharing the workdir.
"""

from __future__ import annotations

import json
import os

import numpy as np

from westworld_jax.control import episode_store

_FIXED = ("expert_policy", "oracle", "oracle_wm_size", "random")


def _parse(row: str) -> dict:
  """'oracle' -> policy; 'wm-<model>-<pretrained|recipe>' -> world_model with model and recipe."""
  if row == "oracle_wm_size":  # the oracle at the world model's MPPI size
    return {"policy": "oracle", "model": None, "finetuned": None, "recipe": "world_model_size"}
  if row in _FIXED:
    return {"policy": row, "model": None, "finetuned": None, "recipe": None}
  _, model, which = row.split("-", 2)
  finetuned = which != "pretrained"
  return {"policy": "world_model", "model": model, "finetuned": finetuned, "recipe": which if finetuned else None}


def _mean_of(dicts: list[dict]) -> dict:
  keys = sorted({k for d in dicts for k, v in d.items() if isinstance(v, (int, float))})
  return {k: float(np.mean([d[k] for d in dicts if k in d])) for k in keys}


def rows(cfg, workdir: str) -> list[dict]:
  out = []
  for robot in cfg.control:
    base = os.path.join(workdir, robot, "rows")
    if not os.path.isdir(base):
      continue
    ccfg = cfg.control[robot]
    order = lambda r: (
      r not in _FIXED,
      _FIXED.index(r) if r in _FIXED else 0,
      r.rsplit("-", 1)[0],
      not r.endswith("-pretrained"),
      r,
    )
    names = sorted(os.listdir(base), key=order)
    for name in names:
      recs = episode_store.EpisodeStore(os.path.join(base, name)).records(cfg.episodes)
      if not recs:
        continue
      rets = np.array([r["return"] for r in recs])
      lat = [r["replan_ms_median"] for r in recs if r.get("replan_ms_median") is not None]
      checks = [r["plan_check"] for r in recs if r.get("plan_check")]
      out.append(
        {
          "robot": robot,
          **_parse(name),
          "return_mean": round(float(rets.mean()), 1),
          "return_std": round(float(rets.std()), 1),
          "episodes": len(recs),
          "episode_len": cfg.episode_len or ccfg.episode_len,
          "length_mean": float(np.mean([r["length"] for r in recs])),
          "returns": [round(float(x), 1) for x in rets],
          "replan_ms": round(float(np.median(lat)), 1) if lat and recs[0].get("mppi") else None,
          "mppi": recs[0].get("mppi"),
          "physics": recs[0].get("physics"),
          "plan_check": _mean_of(checks) if checks else None,
        }
      )
  for r in out:  # share of the oracle's return on the same robot
    oracle = [o for o in out if o["robot"] == r["robot"] and o["policy"] == "oracle" and o["recipe"] is None]
    r["pct_of_oracle"] = round(100.0 * r["return_mean"] / oracle[0]["return_mean"], 1) if oracle else None
  return out


def _label(r: dict) -> str:
  if r["policy"] == "oracle" and r["recipe"]:
    return "oracle MPPI at the world model's size"
  if r["policy"] != "world_model":
    return {"expert_policy": "PPO expert", "oracle": "oracle MPPI", "random": "random"}[r["policy"]]
  return f"{r['model']} ({r['recipe'] if r['finetuned'] else 'pretrained'})"


def _markdown(cfg, table: list[dict]) -> str:
  lines = [
    f"# Control table ({cfg.variant}): the authors' MPPI protocol",
    "",
    "Returns are gym's reward per episode (mean ± std over episodes from the same start states); "
    "'% oracle' is the share of simulator-MPPI's return. Plan check: the world model's predicted cost "
    "of the plan it chose against that plan's cost in the simulator (mean over checked plans); rank: over "
    "candidates drawn around that plan as MPPI draws its samples, the Spearman correlation of predicted and "
    "simulated costs and the simulated-cost quantile of the model's favourite (0 = the physics' best, 0.5 = random).",
    "",
  ]
  for robot in dict.fromkeys(r["robot"] for r in table):
    lines += [
      f"## {robot}",
      "",
      "| policy | MPPI | return | ± std | % oracle | episodes | mean length | replan ms | predicted / simulated plan cost "
      "| rank corr / pick quantile |",
      "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in table if r["robot"] == robot):
      pc = r["plan_check"]
      check = f"{pc['predicted_total']:.0f} / {pc['simulated_total']:.0f}" if pc else "-"
      rank = f"{pc['rank_corr']:.2f} / {pc['pick_quantile']:.2f}" if pc and "rank_corr" in pc else "-"
      lines.append(
        f"| {_label(r)} | {r['mppi'] or '-'} | {r['return_mean']:.1f} | {r['return_std']:.1f} | "
        f"{'-' if r['pct_of_oracle'] is None else r['pct_of_oracle']} | {r['episodes']} | {r['length_mean']:.0f} | "
        f"{'-' if r['replan_ms'] is None else r['replan_ms']} | {check} | {rank} |"
      )
    lines.append("")
  return "\n".join(lines)


def _plot(table: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  robots = list(dict.fromkeys(r["robot"] for r in table))
  fig, axes = plt.subplots(1, len(robots), figsize=(6 * len(robots), 0.45 * max(len(table), 6) + 1.5), squeeze=False)
  for ax, robot in zip(axes[0], robots):
    rs = [r for r in table if r["robot"] == robot]
    y = np.arange(len(rs))
    colors = [
      "tab:gray" if r["policy"] != "world_model" else ("tab:blue" if r["finetuned"] else "tab:orange") for r in rs
    ]
    ax.barh(y, [r["return_mean"] for r in rs], xerr=[r["return_std"] for r in rs], color=colors)
    for r_i, r in zip(y, rs):
      ax.plot(r["returns"], [r_i] * len(r["returns"]), "k.", ms=3)
    ax.set_yticks(y, [_label(r) for r in rs])
    ax.invert_yaxis()
    ax.set_xlabel("return (gym reward)")
    ax.set_title(robot)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def write(cfg, workdir: str) -> dict:
  """Writes results.json, results.md, plots/returns.png under workdir; returns their paths and rows."""
  table = rows(cfg, workdir)
  res, md = os.path.join(workdir, "results.json"), os.path.join(workdir, "results.md")
  doc = {"variant": cfg.variant, "episodes": cfg.episodes, "rows": table}
  with open(res + ".tmp", "w") as f:
    json.dump(doc, f, indent=1)
  os.replace(res + ".tmp", res)
  with open(md + ".tmp", "w") as f:
    f.write(_markdown(cfg, table) + "\n")
  os.replace(md + ".tmp", md)
  if table:
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    _plot(table, os.path.join(workdir, "plots", "returns.png"))
  return {"results": res, "markdown": md, "rows": table}
