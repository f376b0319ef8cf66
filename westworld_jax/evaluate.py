"""Evaluation as in the paper (DESIGN.md, "Evaluation protocol"):

  python -m westworld_jax.evaluate --config experiments/zero_shot.py[:tiny] --checkpoint DIR [--workdir OUT]
  python -m westworld_jax.evaluate --config experiments/zero_shot.py --checkpoint DIR \
      --robot my_robot.xml --data my_trajectories.hdf5          (your own robot and data)

--checkpoint takes training workdirs, comma-separated, optionally labelled: `westworld=A,westworld=B,
trajworld=C` (a label given twice = seeds: tables show mean ± std). Unlabelled: the model's name.

Protocol, per evaluated environment:
  - windows of history + horizon steps (the checkpoint's history; 50 + 100 at base), cut without
    overlap from the environment's held-out episodes (split "val": whole episodes that were used
    neither for training nor for statistics). A zero-shot environment without val episodes falls
    back to its other episodes (the model never saw the robot at all); results say so.
  - normalised to [0, 1] with the min-max of that environment's OWN training episodes (its corpus
    metadata), never with statistics of the pretraining run (its data_stats.json is not read here).
  - one model.predict call per batch predicts the whole horizon from the history and the true
    actions (baselines roll out inside predict).
  - MAE and MSE pooled over every valid (window, step >= history, channel) element in the normalised
    space (padded channels and steps past an episode's end never count), also x100 (the scale of the
    paper's tables); per horizon step; per environment and per robot (its environments pooled).
  - zero-shot (`require_unseen`): refuses a checkpoint trained on the robot (name or MJCF fingerprint).
Writes OUT/results.json, OUT/results.md, OUT/plots/*.png.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from absl import app, flags, logging

from westworld_jax.data import pipeline, shards
from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import data as data_lib
from westworld_jax.training import logs
from westworld_jax.training import step as step_lib
from westworld_jax.training.loop import load_for_inference, pad_batch
from westworld_jax import cli

X100 = 100.0  # the paper's tables report errors in the normalised space times 100 (apparently)


class EvaluationError(cli.UserError, ValueError):
  """The evaluation command was given inputs that do not go together; the message says what to pass."""


class HeldOutLeakError(cli.UserError, ValueError):
  """A zero-shot evaluation of a robot the checkpoint was trained on."""


def enable_compilation_cache(path: str | None = None) -> None:
  """Persistent XLA cache: the many runs of one experiment share programs (compiles drop ~5x)."""
  path = path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "westworld_jax_jit")
  jax.config.update("jax_compilation_cache_dir", path)


# ----------------------------------------------------------------------------- metric

@dataclasses.dataclass
class Pooled:
  """Error sums over batches (sums, not means, so windows of any padding pool exactly)."""
  history: int
  sum_abs: float = 0.0
  sum_sq: float = 0.0
  count: float = 0.0
  windows: int = 0
  sum_abs_t: np.ndarray | None = None  # [T] per window step
  sum_sq_t: np.ndarray | None = None
  count_t: np.ndarray | None = None

  def add(self, err: dict, windows: int) -> None:
    """err: step.horizon_errors of one batch."""
    err = jax.device_get(err)
    self.sum_abs += float(err["sum_abs"])
    self.sum_sq += float(err["sum_sq"])
    self.count += float(err["count"])
    self.windows += int(windows)
    for k in ("sum_abs_t", "sum_sq_t", "count_t"):
      v = np.asarray(err[k], np.float64)
      setattr(self, k, v if getattr(self, k) is None else getattr(self, k) + v)

  def merge(self, other: "Pooled") -> "Pooled":
    out = Pooled(self.history)
    for p in (self, other):
      if p.count_t is not None:
        out.add({k: getattr(p, k) for k in ("sum_abs", "sum_sq", "count", "sum_abs_t", "sum_sq_t", "count_t")},
                p.windows)
    return out

  def summary(self) -> dict:
    if not self.count:
      raise ValueError("no valid element was evaluated (no window with a step after the history)")
    mae, mse = self.sum_abs / self.count, self.sum_sq / self.count
    t = self.count_t[self.history:]  # horizon step k = t - history + 1
    ok = t > 0
    by_step = lambda s: np.where(ok, s[self.history:] / np.maximum(t, 1), np.nan)
    return {"mae": mae, "mse": mse, "mae_x100": X100 * mae, "mse_x100": X100 * mse,
            "count": self.count, "windows": self.windows,
            "mae_by_step": [None if np.isnan(v) else float(v) for v in by_step(self.sum_abs_t)],
            "mse_by_step": [None if np.isnan(v) else float(v) for v in by_step(self.sum_sq_t)]}


def pooled_errors(pred_btc, batch: dict, history: int) -> dict:
  """The metric on one batch: MAE/MSE pooled over valid (window, step >= history, channel) elements."""
  p = Pooled(history)
  p.add(step_lib.horizon_errors(pred_btc, batch, history), len(pred_btc))
  return p.summary()


# ----------------------------------------------------------------------------- checkpoints

@dataclasses.dataclass
class Checkpoint:
  label: str
  workdir: str
  model: Any  # registry.WorldModel
  params: Any
  data_stats: dict  # the training run's environments and their statistics (read for leak checks only)
  run_config: dict
  step: int

  @property
  def trained_envs(self) -> list[str]:
    return list(self.data_stats)


def parse_checkpoints(spec: str) -> list[tuple[str | None, str]]:
  """'A,label=B' -> [(None, 'A'), ('label', 'B')]."""
  out = []
  for part in (p.strip() for p in (spec or "").split(",")):
    if not part:
      continue
    label, sep, path = part.partition("=")
    out.append((label.strip(), path.strip()) if sep else (None, part))
  return out


def load_run_config(workdir: str) -> dict:
  """The run config of a training workdir (its run_config.json)."""
  workdir = os.path.abspath(workdir)
  run_file = os.path.join(workdir, ckpt_lib.RUN_FILE)
  if not os.path.exists(run_file):
    raise ckpt_lib.NoCheckpointError(f"--checkpoint {workdir}: not a training workdir (no {ckpt_lib.RUN_FILE}); "
                            "pass the --workdir of a `python -m westworld_jax.train` run")
  with open(run_file) as f:
    return json.load(f)


def load_checkpoint(workdir: str, label: str | None = None) -> Checkpoint:
  workdir = os.path.abspath(workdir)
  run_cfg = load_run_config(workdir)
  ck = ckpt_lib.Checkpointer(workdir, async_save=False)
  step = ck.latest_step()
  ck.close()
  if step is None:
    raise ckpt_lib.NoCheckpointError(f"--checkpoint {workdir} holds no checkpoint yet")
  model, params, stats, step = load_for_inference(workdir, None, with_step=True)
  return Checkpoint(label or run_cfg["model"]["name"], workdir, model, params, stats, run_cfg, step)


def hold_last_reference(ckpt: Checkpoint) -> Checkpoint:
  """A reference 'model' that repeats the last history observation over the horizon: errors well
  below it mean a model learned dynamics, not just the current state."""
  import jax.numpy as jnp
  from westworld_jax.model import registry
  h = ckpt.model.history

  def predict(params, batch):
    obs = batch["obs"].astype(jnp.float32)
    return registry.copy_history(jnp.broadcast_to(obs[:, h - 1:h], obs.shape), batch, h)
  model = registry.WorldModel("hold_last", ckpt.model.config, None, None, predict, None)
  return Checkpoint("hold last obs (reference)", "-", model, {}, {}, ckpt.run_config, 0)


def _fingerprints(corpus_dir: str, envs: Iterable[str]) -> dict[str, str]:
  out = {}
  for e in envs:
    path = os.path.join(corpus_dir, e, shards.METADATA)
    if os.path.exists(path):
      with open(path) as f:
        out[e] = json.load(f).get("fingerprint")
  return out


def check_unseen(ckpt: Checkpoint, env_dir: str) -> None:
  """Raises HeldOutLeakError when the checkpoint trained on the environment or on its robot (same
  catalogue name, or same MJCF fingerprint when the training corpus is readable)."""
  meta = shards.load_metadata(env_dir)
  env, robot = os.path.basename(os.path.normpath(env_dir)), meta["robot"]["name"]
  hits = [e for e, s in ckpt.data_stats.items() if e == env or s.get("robot") == robot]
  corpus = ckpt.run_config.get("data", {}).get("corpus_dir", "")
  hits += [e for e, fp in _fingerprints(corpus, ckpt.data_stats).items()
           if fp and fp == meta.get("fingerprint") and e not in hits]
  if hits:
    raise HeldOutLeakError(f"zero-shot evaluation of {env} (robot {robot}) with {ckpt.workdir}, which trained on "
                           f"{hits}: not zero-shot. Evaluate a checkpoint pretrained without this robot, or set "
                           "--config.require_unseen=False (e.g. after fine-tuning on it)")


# ----------------------------------------------------------------------------- evaluation

def _buckets(configured: Sequence[int], model_max: int | None) -> tuple[int, ...]:
  """The run's buckets plus the model's channel capacity, so every robot that fits the model fits."""
  bs = {int(b) for b in configured if model_max is None or b <= model_max}
  if model_max:
    bs.add(int(model_max))
  return tuple(sorted(bs))


@dataclasses.dataclass
class EnvResult:
  env: str
  robot: str
  pooled: Pooled
  split: str  # which episodes were evaluated
  episodes: int
  examples: list  # [(obs_tc, pred_tc)] of the first windows, for plots
  channel_names: list[str]


class Evaluator:
  """One checkpoint's jitted (predict + error sums): the whole horizon from ONE predict call."""

  def __init__(self, model, params, batch_size: int, history: int, horizon: int,
               obs_buckets: Sequence[int] = (), act_buckets: Sequence[int] = ()):
    if history != model.history:
      raise ValueError(f"history {history} differs from the model's {model.history}")
    max_steps = getattr(model.config, "max_steps", history + horizon)
    if history + horizon > max_steps:
      raise ValueError(f"history {history} + horizon {horizon} exceeds the model's max_steps={max_steps}")
    self.model, self.params = model, params
    self.batch_size, self.history, self.horizon = batch_size, history, horizon
    self.max_obs = getattr(model.config, "max_obs_channels", None)
    self.max_act = getattr(model.config, "max_act_channels", None)
    self.obs_buckets = _buckets(obs_buckets or pipeline.DEFAULT_OBS_BUCKETS, self.max_obs)
    self.act_buckets = _buckets(act_buckets or pipeline.DEFAULT_ACT_BUCKETS, self.max_act)

    def eval_step(params, batch):
      pred = model.predict(params, batch)
      return pred, step_lib.horizon_errors(pred, batch, model.history)
    self._step = jax.jit(eval_step)

  @classmethod
  def for_checkpoint(cls, ckpt: Checkpoint, batch_size: int, horizon: int = 0) -> "Evaluator":
    d = ckpt.run_config["data"]
    return cls(ckpt.model, ckpt.params, batch_size, int(d["history"]), int(horizon or d["horizon"]),
               d.get("obs_buckets", ()), d.get("act_buckets", ()))

  def _pipeline(self, corpus_dir: str, env: str, split: str) -> pipeline.PipelineConfig:
    return pipeline.PipelineConfig(corpus_dir, (env,), batch_size=self.batch_size, history=self.history,
                                   horizon=self.horizon, split=split, obs_buckets=self.obs_buckets,
                                   act_buckets=self.act_buckets, shuffle=False, repeat=False, num_threads=0)

  def evaluate_env(self, corpus_dir: str, env: str, max_windows: int = 0, keep_examples: int = 3,
                   allow_train_fallback: bool = False) -> EnvResult:
    env_dir = os.path.join(corpus_dir, env)
    meta = shards.load_metadata(env_dir)
    n_obs, n_act = len(meta["robot"]["obs_channels"]), len(meta["robot"]["act_channels"])
    if (self.max_obs and n_obs > self.max_obs) or (self.max_act and n_act > self.max_act):
      raise ValueError(f"{env} has {n_obs} obs / {n_act} action channels but the model holds at most "
                       f"{self.max_obs} / {self.max_act}: pretrain with larger model.max_obs_channels / "
                       "max_act_channels to evaluate this robot")
    struct = np.reshape(meta["obs_struct"] + meta["act_struct"], (-1, 4))
    for what, col, bound in (("object ids", struct[:, 0], "max_objects"), ("body ranks", struct[:, 1:], "max_bodies"),
                             ("channel kinds", np.array(meta["obs_kind"] + meta["act_kind"]), "num_kinds")):
      cap = getattr(self.model.config, bound, None)
      if cap is not None and len(col) and col.max() >= cap:  # an embedding lookup out of range gives NaN
        raise ValueError(f"{env} has {what} up to {int(col.max())} but the model's {bound}={cap}: this robot "
                         f"needs a model built with a larger {bound}")
    split = "val"
    if not len(pipeline.load_env(self._pipeline(corpus_dir, env, "val"), 0, env).windows):
      if not allow_train_fallback:
        raise shards.CorpusError(f"{env} has no held-out (val) episodes longer than {self.history} steps: "
                                 "collect more episodes for it")
      logging.warning("%s has no val episodes: evaluating its training-split episodes (the model never "
                      "trained on this robot)", env)
      split = "train"
    cfg = self._pipeline(corpus_dir, env, split)
    env_data = pipeline.load_env(cfg, 0, env)
    ds, _ = pipeline.make_dataset(cfg)
    pooled, examples, done = Pooled(self.history), [], 0
    for b in ds:
      if max_windows:
        b = {k: v[: max_windows - done] for k, v in b.items()}
      n = len(b["obs"])
      pred, err = self._step(self.params, pad_batch(b, self.batch_size))  # padding windows count nowhere
      pooled.add(err, n)
      if len(examples) < keep_examples:
        pred = np.asarray(jax.device_get(pred))
        for i in range(min(n, keep_examples - len(examples))):
          t = int(b["time_mask"][i].sum())
          examples.append((b["obs"][i, :t, :n_obs], pred[i, :t, :n_obs]))
      done += n
      if max_windows and done >= max_windows:
        break
    episodes = len({(int(w[0]), int(w[1])) for w in env_data.windows[:done]})  # unshuffled: in order
    return EnvResult(env, meta["robot"]["name"], pooled,
                     "val" if split == "val" else "train (no val episodes; robot unseen by the model)",
                     episodes, examples, [c["name"] for c in meta["robot"]["obs_channels"]])


def evaluate_checkpoint(ckpt: Checkpoint, corpus_dir: str, environments: Sequence[str], *,
                        require_unseen: bool, batch_size: int = 8, horizon: int = 0, max_windows: int = 0,
                        keep_examples: int = 3) -> dict[str, EnvResult]:
  ev = Evaluator.for_checkpoint(ckpt, batch_size, horizon)
  out = {}
  for env in environments:
    if require_unseen:
      check_unseen(ckpt, os.path.join(corpus_dir, env))
    t0 = time.perf_counter()
    out[env] = ev.evaluate_env(corpus_dir, env, max_windows, keep_examples, allow_train_fallback=require_unseen)
    logging.info("%s on %s: MAE %.4f (%d windows, %.1fs)", ckpt.label, env, out[env].pooled.summary()["mae"],
                 out[env].pooled.windows, time.perf_counter() - t0)
  return out


def env_summaries(results: dict[str, EnvResult]) -> dict:
  """{"envs": {env: summary}, "robots": {robot: pooled summary}, "all": pooled summary}."""
  envs = {e: {**r.pooled.summary(), "robot": r.robot, "split": r.split, "episodes": r.episodes}
          for e, r in results.items()}
  by_robot: dict[str, Pooled] = {}
  for r in results.values():
    by_robot[r.robot] = by_robot[r.robot].merge(r.pooled) if r.robot in by_robot else r.pooled
  total = None
  for r in results.values():
    total = r.pooled if total is None else total.merge(r.pooled)
  return {"envs": envs, "robots": {k: v.summary() for k, v in by_robot.items()},
          "all": total.summary() if total is not None else None}


# ----------------------------------------------------------------------------- reports

def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1; 0 for one value)."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not len(v):
    return float("nan"), float("nan")
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values: Sequence[float], digits: int = 2) -> str:
  m, s = mean_std(values)
  if np.isnan(m):
    return "—"
  return f"{m:.{digits}f} ± {s:.{digits}f}" if len([x for x in values if x is not None]) > 1 else f"{m:.{digits}f}"


def markdown_table(rows: Sequence[str], cols: Sequence[str], cell, row_header: str = "",
                   bold_min: str = "row") -> str:
  """cell(row, col) -> list of values (seeds). bold_min: 'row' / 'col' marks the lowest mean per row /
  column, '' nothing."""
  vals = {(r, c): cell(r, c) for r in rows for c in cols}
  means = {k: mean_std(v)[0] if v else float("nan") for k, v in vals.items()}
  def best(keys):
    m = [means[k] for k in keys if not np.isnan(means[k])]
    return min(m) if len(m) > 1 else None
  best_row = {r: best([(r, c) for c in cols]) for r in rows}
  best_col = {c: best([(r, c) for r in rows]) for c in cols}
  lines = [f"| {row_header} | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
  for r in rows:
    cells = []
    for c in cols:
      b = best_row[r] if bold_min == "row" else best_col[c] if bold_min == "col" else None
      v = vals[(r, c)]
      cells.append("—" if not v else f"**{fmt(v)}**" if b is not None and means[(r, c)] == b else fmt(v))
    lines.append(f"| {r} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_error_vs_horizon(path: str, curves: dict[str, Sequence[float | None]], title: str,
                          ylabel: str = "MAE (normalised)") -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 3.8))
  for name, ys in curves.items():
    ys = np.array([np.nan if y is None else y for y in ys], np.float64)
    ax.plot(np.arange(1, len(ys) + 1), ys, lw=1.4, label=name)
  ax.set_xlabel("prediction step after the history")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return save_figure(fig, path)


def save_figure(fig, path: str) -> str:
  """Writes a matplotlib figure as a PNG (folders made) and closes it; returns the path."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def write_json(path: str, obj: Any) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
  os.replace(path + ".tmp", path)
  return path


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_examples(outdir: str, label: str, res: EnvResult, history: int) -> list[str]:
  return [logs.plot_predictions(os.path.join(outdir, "plots", f"{_safe(label)}_{_safe(res.env)}_window{i}.png"),
                                obs, pred, history, res.channel_names,
                                f"{label} on {res.env} ({res.split} window {i}; normalised)")
          for i, (obs, pred) in enumerate(res.examples)]


PROTOCOL = ("windows of history+horizon steps from each environment's held-out (val) episodes, normalised "
            "with that environment's own training-episode min-max; the horizon predicted in one "
            "model.predict call with true actions; MAE/MSE pooled over valid (window, step, channel) "
            "elements in [0,1] space; *_x100 = x100 (paper's table scale)")


def report(outdir: str, runs: list[dict], environments: Sequence[str], title: str, extra: dict | None = None) -> dict:
  """results.json, results.md (MAE and MSE x100 per environment and robot; mean ± std over seeds) and
  error-vs-horizon plots, from runs = [{"label", "checkpoint", "step", "history", "horizon", **env_summaries}]."""
  labels = list(dict.fromkeys(r["label"] for r in runs))
  by = collections.defaultdict(list)
  for r in runs:
    by[r["label"]].append(r)
  robots = list(dict.fromkeys(r["envs"][e]["robot"] for r in runs for e in environments if e in r["envs"]))
  summary, seeds = {lab: {"envs": {}, "robots": {}} for lab in labels}, 1
  for lab in labels:
    for kind, keys in (("envs", environments), ("robots", robots)):
      for k in keys:
        vals = [r[kind][k] for r in by[lab] if k in r[kind]]
        if vals:
          seeds = max(seeds, len(vals))
          summary[lab][kind][k] = {"seeds": len(vals), **{
              f"{m}_{s}": v for m in ("mae_x100", "mse_x100") for s, v in zip(("mean", "std"), mean_std([x[m] for x in vals]))}}
  hist, hor = runs[0].get("history"), runs[0].get("horizon")
  md = [f"# {title}", "", f"Protocol: {PROTOCOL}. History {hist}, horizon {hor}.",
        "Values: error x100 (lower is better; bold = best per column); "
        + ("mean ± sample std over seeds." if seeds > 1 else "one seed."), ""]
  for metric in ("mae_x100", "mse_x100"):
    name = metric.split("_")[0].upper()
    md += [f"## {name} x100 per robot", "",
           markdown_table(labels, robots, lambda lab, rb: [r["robots"][rb][metric] for r in by[lab] if rb in r["robots"]],
                          "model", bold_min="col"), ""]
    md += [f"## {name} x100 per environment", "",
           markdown_table(labels, list(environments),
                          lambda lab, e: [r["envs"][e][metric] for r in by[lab] if e in r["envs"]], "model",
                          bold_min="col"), ""]
  md += ["## Runs", "", "| label | checkpoint | step | windows evaluated |", "|---|---|---|---|"]
  for r in runs:
    md.append(f"| {r['label']} | {r['checkpoint']} | {r['step']} | "
              f"{sum(v['windows'] for v in r['envs'].values())} |")
  md.append("")
  plots = []
  for e in environments:  # error vs horizon: one curve per label (its first run on e)
    curves = {lab: next(r for r in by[lab] if e in r["envs"])["envs"][e]["mae_by_step"]
              for lab in labels if any(e in r["envs"] for r in by[lab])}
    if curves:
      plots.append(plot_error_vs_horizon(os.path.join(outdir, "plots", f"error_vs_horizon_{_safe(e)}.png"),
                                         curves, f"{e}: MAE vs prediction step"))
  md += ["## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots] + [""]
  os.makedirs(outdir, exist_ok=True)
  with open(os.path.join(outdir, "results.md"), "w") as f:
    f.write("\n".join(md))
  out = {"title": title, "protocol": PROTOCOL, "history": hist, "horizon": hor, "environments": list(environments),
         "summary": summary, "runs": runs, **(extra or {})}
  write_json(os.path.join(outdir, "results.json"), out)
  return out


def run_record(ckpt: Checkpoint, results: dict[str, EnvResult], horizon: int = 0) -> dict:
  return {"label": ckpt.label, "checkpoint": ckpt.workdir, "step": ckpt.step, "model": ckpt.run_config["model"]["name"],
          "history": int(ckpt.run_config["data"]["history"]),
          "horizon": int(horizon or ckpt.run_config["data"]["horizon"]),
          "params": int(sum(np.size(x) for x in jax.tree.leaves(ckpt.params))), **env_summaries(results)}


# ----------------------------------------------------------------------------- driver

def ensure_environments(corpus_dir: str, environments: Sequence[str], collect_cfg) -> None:
  """Generates missing environments with the data collector (as training.data.ensure_corpus does)."""
  import ml_collections
  if collect_cfg is not None:
    collect_cfg = collect_cfg.copy_and_resolve_references()
    collect_cfg.environments, collect_cfg.max_environments = tuple(environments), 0
  data_lib.ensure_corpus(ml_collections.ConfigDict({
      "corpus_dir": corpus_dir, "environments": tuple(environments), "collect": collect_cfg,
      "shared_filesystem": False}))


def evaluate(cfg, checkpoints: Sequence[tuple[str | None, str]], outdir: str, robot: str | None = None,
             data: str | None = None) -> dict:
  """The whole evaluation command: every checkpoint on every environment; writes the report."""
  if not checkpoints:
    raise EvaluationError("no checkpoint: pass --checkpoint DIR (a training workdir), or set config.checkpoints")
  corpus_dir, envs = cfg.corpus_dir, list(cfg.environments)
  if bool(robot) != bool(data):
    raise EvaluationError("--robot and --data go together: the robot's MJCF and its trajectories (HDF5/npz)")
  ckpts = [load_checkpoint(path, label) for label, path in checkpoints]  # a bad --checkpoint fails before any work
  if robot:  # the user's own robot: import it as a corpus environment first
    from westworld_jax.data import importers
    name = _safe(os.path.splitext(os.path.basename(data))[0])
    corpus_dir = os.path.join(outdir, "imported")
    # Imported anew each time (overwrite): the same outdir may be reused with other data.
    history = min(c.model.history for c in ckpts)
    importers.import_file(robot, data, corpus_dir, name, split="zero_shot", val_fraction=cfg.import_val_fraction,
                          overwrite=True, history=history)
    envs = [name]
  else:
    ensure_environments(corpus_dir, envs, cfg.get("collect"))
  runs, t0 = [], time.perf_counter()
  for ckpt in ckpts:
    res = evaluate_checkpoint(ckpt, corpus_dir, envs, require_unseen=cfg.require_unseen,
                              batch_size=cfg.batch_size, horizon=cfg.horizon, max_windows=cfg.max_windows,
                              keep_examples=cfg.plot_windows)
    for r in res.values():
      plot_examples(outdir, ckpt.label, r, ckpt.model.history)
    runs.append(run_record(ckpt, res, cfg.horizon))
  if cfg.get("reference", True):
    ref = hold_last_reference(ckpt)
    runs.append(run_record(ref, evaluate_checkpoint(ref, corpus_dir, envs, require_unseen=True, batch_size=cfg.batch_size,
                                                    horizon=cfg.horizon, max_windows=cfg.max_windows, keep_examples=0),
                           cfg.horizon))
  return report(outdir, runs, envs, cfg.get("title", "Zero-shot trajectory prediction"),
                {"config": cfg.to_dict(), "corpus_dir": os.path.abspath(corpus_dir),
                 "seconds": time.perf_counter() - t0})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  enable_compilation_cache()
  cfg = _CONFIG.value
  checkpoints = parse_checkpoints(_CHECKPOINT.value or cfg.checkpoints)
  out = evaluate(cfg, checkpoints, _WORKDIR.value, _ROBOT.value, _DATA.value)
  print(open(os.path.join(_WORKDIR.value, "results.md")).read().split("## Runs")[0])
  print(f"wrote {_WORKDIR.value}/results.json, results.md, plots/ ({out['seconds']:.0f}s)")


if __name__ == "__main__":
  # Flags only when run as a program, so finetune/scaling can import this module.
  from ml_collections import config_flags
  _ROBOT = flags.DEFINE_string("robot", None, "Your robot's MJCF/URDF (or a catalogue name): evaluate on "
                               "its trajectories (--data), imported as a zero-shot environment.")
  _DATA = flags.DEFINE_string("data", None, "Trajectories of --robot: HDF5 (D4RL/Minari layout) or .npz.")
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/zero_shot.py", "Evaluation config file.")
  _CHECKPOINT = flags.DEFINE_string("checkpoint", "", "Training workdir(s): DIR or label=DIR, comma-separated "
                                    "(a label twice = seeds). Default: config.checkpoints.")
  _WORKDIR = flags.DEFINE_string("workdir", "workdirs/evaluate", "Output directory (results.json, results.md, plots).")
  cli.run(main)
