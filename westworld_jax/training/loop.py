"""The training loop: `train(cfg, workdir)` (what `python -m westworld_jax.train` runs).

Resumes automatically from the latest checkpoint in the workdir (state + data iterator), so
rerunning the same command after an interruption continues exactly where it stopped.
SIGTERM (preemption) saves a checkpoint at the next step boundary and exits cleanly.
A non-finite loss or gradient stops the run without saving; the last good checkpoint stays.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import zlib
from typing import Any

import jax
import numpy as np
import tqdm
from absl import logging

from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import corpus as corpus_lib
from westworld_jax.training import logs
from westworld_jax.training import mesh as mesh_lib
from westworld_jax.training import state as state_lib
from westworld_jax.training import step as step_lib
from westworld_jax.training import validate
from westworld_jax.data import pipeline
from westworld_jax import cli
from westworld_jax.inference import DATA_STATS_FILE, build_model, pad_batch


class NonFiniteLossError(cli.UserError, FloatingPointError):
  """Training produced a NaN/inf loss or gradient; the message says which checkpoint is good."""


@dataclasses.dataclass
class TrainResult:
  state: Any  # final train state (on the mesh)
  step: int
  rows: list[dict]  # metrics rows logged by this invocation
  val: dict | None  # last validation metrics
  stopped_early: bool  # preempted or max_steps_per_run reached


def maybe_initialize_distributed(cfg=None) -> None:
  """jax.distributed.initialize() on multi-process launches (TPU pod slices, SLURM, or an explicit
  coordinator); it must run before any other JAX call."""
  env = os.environ
  multi = (
    bool(env.get("JAX_COORDINATOR_ADDRESS"))
    or int(env.get("SLURM_NTASKS", "1")) > 1
    or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    or (cfg is not None and cfg.get("distributed", False))
  )
  if multi and not jax.distributed.is_initialized():
    jax.distributed.initialize()
    logging.info(
      "process %d of %d, %d local / %d global devices",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
    )


def to_global(host_batch: dict, sharding, per_process: bool = True) -> dict:
  """Global arrays from host data. per_process: each process holds its own slice (training);
  else every process holds the same full batch (validation)."""
  if per_process:
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in host_batch.items()}
  return {
    k: jax.make_array_from_callback(np.shape(v), sharding, lambda idx, v=v: np.asarray(v)[idx])
    for k, v in host_batch.items()
  }


def real_tokens(host_batch: dict) -> int:
  steps_b = host_batch["time_mask"].sum(1)
  chans_b = host_batch["obs_mask"].sum(1) + host_batch["act_mask"].sum(1)
  return int((steps_b * chans_b).sum())


class Validator:
  """Validation on held-out episodes of the training environments: the whole horizon from one
  predict call (history given, true actions), MAE/MSE pooled over valid elements."""

  def __init__(self, cfg, model, envs: list[str], mesh, params_shardings):
    self.cfg, self.model, self.mesh = cfg, model, mesh
    self.envs = corpus_lib.validation_environments(cfg.data, envs)
    self.batches: list[dict] = []
    if not self.envs:
      logging.warning("no validation episodes in %s: validation is skipped", cfg.data.corpus_dir)
      return
    pcfg = dataclasses.replace(
      corpus_lib.pipeline_config(cfg.data, self.envs, cfg.seed, split="val"), process_index=0, process_count=1
    )  # every host evaluates the same windows
    ds, _ = pipeline.make_dataset(pcfg)
    eb = cfg.data.eval_batch_size
    for i, b in enumerate(ds):
      if i >= cfg.eval.max_batches:
        break
      self.batches.append(pad_batch(b, eb))
    self.sharding = mesh_lib.batch_sharding(mesh, mesh_lib.config_rules(cfg.mesh))
    self.eval_step = step_lib.make_eval_step(model, params_shardings, self.sharding)

  def __call__(self, params, step: int, workdir: str | None) -> dict | None:
    if not self.batches:
      return None
    tot = {"sum_abs": 0.0, "sum_sq": 0.0, "count": 0.0}
    per_env = {}
    first = None
    with jax.set_mesh(self.mesh):
      for b in self.batches:
        pred, err = self.eval_step(params, to_global(b, self.sharding, per_process=False))
        err = jax.device_get(err)
        for k in tot:
          tot[k] += float(err[k])
        for e, sa, ss, c in zip(b["env_id"], err["sum_abs_b"], err["sum_sq_b"], err["count_b"]):
          if c > 0:
            acc = per_env.setdefault(self.envs[int(e)], [0.0, 0.0, 0.0])
            acc[0] += float(sa)
            acc[1] += float(ss)
            acc[2] += float(c)
        if first is None:
          first = (b, np.asarray(jax.device_get(pred)))
    n = max(tot["count"], 1.0)
    out = {"val_mae": tot["sum_abs"] / n, "val_mse": tot["sum_sq"] / n}
    out.update({f"val_mae/{e}": a / max(c, 1.0) for e, (a, _, c) in sorted(per_env.items())})
    if workdir and jax.process_index() == 0 and first is not None:
      b, pred = first
      env = self.envs[int(b["env_id"][0])]
      t = int(b["time_mask"][0].sum())
      co = int(b["obs_mask"][0].sum())
      logs.plot_predictions(
        os.path.join(workdir, "plots", f"val_step_{step:08d}.png"),
        b["obs"][0, :t, :co],
        pred[0, :t, :co],
        self.model.history,
        corpus_lib.channel_names(self.cfg.data, env),
        f"{env}, step {step}: validation window (normalised)",
      )
    return out


def _check_config(cfg, model, mesh) -> None:
  d = cfg.data
  if d.history != model.history:
    raise validate.ConfigError(
      f"data.history={d.history} but the model's history is {model.history}: set "
      "--config.model.history to match (or the other way round)"
    )
  if model.capacity.exceeds("max_window_len", d.history + d.horizon):
    raise validate.ConfigError(
      f"windows of {d.history + d.horizon} steps exceed model.max_window_len="
      f"{model.config.max_window_len}: raise --config.model.max_window_len"
    )
  shards = mesh_lib.batch_shards(mesh, mesh_lib.config_rules(cfg.mesh))
  for name, b in (("data.batch_size", d.batch_size), ("data.eval_batch_size", d.eval_batch_size)):
    if b % shards or b % jax.process_count():
      raise validate.ConfigError(
        f"{name}={b} must be divisible by the {shards} batch shards of the mesh "
        f"{dict(mesh.shape)} and by the {jax.process_count()} processes"
      )


def check_corpus_fits_model(data_cfg, envs: list[str], model) -> None:
  """Out-of-range structural/kind indices would silently read garbage (NaN) from embedding tables."""
  cfg = model.config
  bounds = {"max_objects": (0,), "max_bodies": (1, 2, 3)}
  for name in envs:
    meta = corpus_lib.shards.load_metadata(os.path.join(data_cfg.corpus_dir, name))
    struct = np.array(meta["obs_struct"] + meta["act_struct"]).reshape(-1, 4)
    for field, cols in bounds.items():
      limit = model.capacity.limit(field)
      if limit is not None and len(struct) and int(struct[:, cols].max()) >= limit:
        raise validate.ConfigError(
          f"environment '{name}' has structural index {int(struct[:, cols].max())} but "
          f"model.{field}={limit}: raise --config.model.{field}"
        )
    kinds = meta["obs_kind"] + meta["act_kind"]
    if model.capacity.exceeds("num_kinds", max(kinds, default=-1) + 1):
      raise validate.ConfigError(
        f"environment '{name}' has channel kind {max(kinds)} but model.num_kinds="
        f"{cfg.num_kinds}: raise --config.model.num_kinds"
      )


def _write_run_files(cfg, workdir: str, envs: list[str], model) -> None:
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  # The latest invocation's config; each checkpoint keeps the config it was written with.
  _write_atomic(os.path.join(workdir, ckpt_lib.RUN_FILE), cfg.to_json_best_effort(indent=2))
  stats = {}
  for name in envs:
    meta = corpus_lib.shards.load_metadata(os.path.join(cfg.data.corpus_dir, name))
    stats[name] = {
      "robot": meta["robot"]["name"],
      "stats": meta["stats"],
      "obs_channels": [c["name"] for c in meta["robot"]["obs_channels"]],
      "act_channels": [c["name"] for c in meta["robot"]["act_channels"]],
    }
  _write_atomic(os.path.join(workdir, DATA_STATS_FILE), json.dumps(stats))


def _write_atomic(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _init_from(cfg, state, shardings) -> Any:
  """Replaces the fresh params by those of another run's latest checkpoint (fine-tuning)."""
  src = ckpt_lib.Checkpointer(cfg.init_from, async_save=False)
  abstract = ckpt_lib.with_shardings(jax.eval_shape(lambda: state), shardings)
  found = src.restore_latest(abstract, None, None)
  src.close()
  if found is None:
    raise ckpt_lib.NoCheckpointError(f"init_from={cfg.init_from} has no checkpoint under {src.directory}")
  restored, step, _ = found
  logging.info("initialised params from %s (step %d)", cfg.init_from, step)
  return {**state, "params": restored["params"]}


def train(cfg, workdir: str) -> TrainResult:
  validate.check_training_config(cfg)
  maybe_initialize_distributed(cfg)
  workdir = os.path.abspath(workdir)
  rules = mesh_lib.config_rules(cfg.mesh)
  model = build_model(cfg.model, rules)
  mesh = mesh_lib.make_mesh(cfg.mesh)
  _check_config(cfg, model, mesh)
  envs = corpus_lib.ensure_corpus(cfg.data)
  check_corpus_fits_model(cfg.data, envs, model)
  tx, schedule = state_lib.make_optimizer(cfg.optim, cfg.total_steps)
  identity = ckpt_lib.run_identity(cfg.model.name, model.config, cfg.data, envs)
  config = ckpt_lib.config_dict(cfg)
  record = ckpt_lib.run_record(identity, config)

  iterator = pipeline.make_iterator(corpus_lib.pipeline_config(cfg.data, envs, cfg.seed))
  abstract = state_lib.abstract_state(model, tx, cfg.seed, mesh, rules)
  shardings = mesh_lib.state_shardings(model, abstract, mesh, rules)
  ckpt = ckpt_lib.Checkpointer(workdir, cfg.checkpoint.keep, cfg.checkpoint.async_save)
  with jax.set_mesh(mesh):
    try:
      found = ckpt.restore_latest(ckpt_lib.with_shardings(abstract, shardings), iterator, identity)
    except BaseException:
      ckpt.close(quiet=True)
      raise
    if found is not None:
      state, latest, saved = found
      changes = ckpt_lib.check_resume_config(saved.get("config"), config, latest, ckpt.directory)
      if changes:
        logging.warning(
          "resuming step %d of %s with a changed config (each checkpoint keeps the config it was written with):\n  %s",
          latest,
          ckpt.directory,
          "\n  ".join(changes),
        )
      logging.info("resumed from %s step %d", ckpt.directory, latest)
    else:
      state, _ = state_lib.create_sharded_state(model, tx, cfg.seed, mesh, rules)
      if cfg.init_from:
        state = _init_from(cfg, state, shardings)
  start = int(jax.device_get(state["step"]))
  _write_run_files(cfg, workdir, envs, model)
  logging.info(
    "%s: %d params on mesh %s; %d training environments; steps %d -> %d",
    cfg.model.name,
    state_lib.param_count(state),
    dict(mesh.shape),
    len(envs),
    start,
    cfg.total_steps,
  )

  batch_sharding = mesh_lib.batch_sharding(mesh, rules)
  train_step = step_lib.make_train_step(model, tx, schedule, cfg.seed, shardings, batch_sharding)
  validator = Validator(cfg, model, envs, mesh, shardings["params"])
  writer = logs.MetricsWriter(workdir, resume_step=start, tensorboard=cfg.log.tensorboard)

  preempted = {"flag": False}
  old_handler = None
  try:
    old_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.update(flag=True))
  except ValueError:  # not the main thread: no preemption handling
    pass

  end = cfg.total_steps
  if cfg.max_steps_per_run:
    end = min(end, start + cfg.max_steps_per_run)
  rows, val = [], None
  pending: list[tuple[int, Any, int, int]] = []  # (step, device metrics, tokens, data crc)
  window = {"tokens": 0, "t0": time.perf_counter(), "steps": 0, "sums": {}}

  def drain() -> None:
    """Fetches pending step metrics, stops on a non-finite loss, logs every log_every steps."""
    nonlocal pending
    for s, m, tok, crc in pending:
      m = jax.device_get(m)
      if not bool(m["ok"]):
        good = ckpt.latest_step()
        where = (
          f"the last good checkpoint is step {good} in {ckpt.directory}; rerunning resumes from it"
          if good is not None
          else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
          f"non-finite loss ({float(m['loss'])}) or gradient norm ({float(m['grad_norm'])}) at step {s}; "
          f"the update was discarded and nothing was saved: {where}. Lower optim.lr or check the data."
        )
      window["tokens"] += tok
      window["steps"] += 1
      for k in ("loss", "nll", "aux_loss"):
        if k in m:
          window["sums"][k] = window["sums"].get(k, 0.0) + float(m[k])
      if s % cfg.log.every == 0 or s == end:
        dt = max(time.perf_counter() - window["t0"], 1e-9)
        means = {f"{k}_mean": v / window["steps"] for k, v in window["sums"].items()}
        row = writer.write(
          s,
          {k: v for k, v in m.items() if k != "ok"}
          | means
          | {
            "tokens_per_s": window["tokens"] * jax.process_count() / dt,
            "steps_per_s": window["steps"] / dt,
            "data_crc": crc,
          },
        )
        rows.append(row)
        bar.set_postfix(loss=f"{row['loss_mean']:.4f}", lr=f"{row['lr']:.2e}")
        window.update(tokens=0, t0=time.perf_counter(), steps=0, sums={})
    pending = []

  bar = tqdm.tqdm(
    total=cfg.total_steps,
    initial=start,
    desc="train",
    unit="step",
    disable=jax.process_index() != 0 or not cfg.log.progress,
  )
  stopped_early = False
  try:
    with jax.set_mesh(mesh):
      s = start
      while s < end:
        host_batch = next(iterator)
        tok = real_tokens(host_batch)
        crc = zlib.crc32(np.ascontiguousarray(host_batch["obs"]).tobytes())
        state, metrics = train_step(state, to_global(host_batch, batch_sharding))
        drain()  # the previous step's metrics, while this one runs
        s += 1
        pending.append((s, metrics, tok, crc))
        bar.update(1)
        save = s % cfg.checkpoint.every == 0 or s == end or preempted["flag"]
        if save or s % cfg.eval.every == 0:
          drain()  # never save or evaluate past an unchecked step
        if s % cfg.eval.every == 0 or s == cfg.total_steps:
          val = validator(state["params"], s, workdir)
          if val:
            rows.append(writer.write(s, val))
            bar.write(f"step {s}: " + ", ".join(f"{k}={v:.4f}" for k, v in val.items() if "/" not in k))
        if save:
          ckpt.save(s, state, iterator, record, force=True)
        if preempted["flag"]:
          bar.write(f"SIGTERM: saved step {s} in {ckpt.directory}; rerun the same command to resume")
          break
      drain()
    stopped_early = s < cfg.total_steps
  except BaseException:
    bar.close()
    ckpt.close(quiet=True)  # the error in flight is the one to report
    try:
      writer.close()
    except OSError:  # e.g. the disk is full: the checkpoint error says so
      pass
    raise
  else:
    bar.close()
    try:
      ckpt.close()  # raises CheckpointSaveError when the last asynchronous save failed
    except BaseException:
      try:
        writer.close()
      except OSError:
        pass
      raise
    writer.close()
  finally:
    if old_handler is not None:
      signal.signal(signal.SIGTERM, old_handler)
  return TrainResult(state, s, rows, val, stopped_early)
