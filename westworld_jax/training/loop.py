"""The training loop: `train(cfg, workdir)` (what `python -m westworld_jax.train` runs).

Resumes automatically from the latest checkpoint in the workdir (state + data iterator), so
rerunning the same command after an interruption continues exactly where it stopped; a fresh run
with cfg.init_from starts from that run's params (training/finetune.py).
SIGTERM (preemption) or a first Ctrl-C saves a checkpoint at the next step boundary and exits cleanly.
A non-finite loss or gradient stops the run without saving; the last good checkpoint stays.

Each step runs the jitted train step, then the periodic hooks at its bottom: the step log (the
previous step's metrics, fetched while this step runs), validation, checkpointing, preemption.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import zlib
from typing import Any

import jax
import numpy as np
import tqdm
from absl import logging

from westworld_jax.data import pipeline
from westworld_jax.errors import Interrupted, UserError
from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import corpus as corpus_lib
from westworld_jax.training import finetune
from westworld_jax.training import logs
from westworld_jax.training import mesh as mesh_lib
from westworld_jax.training import run_files
from westworld_jax.training import state as state_lib
from westworld_jax.training import step as step_lib
from westworld_jax.training import validate
from westworld_jax.training import workdir_lock
from westworld_jax.training.distributed import maybe_initialize_distributed, to_global
from westworld_jax.training.validator import Validator


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a NaN/inf loss or gradient; the message says which checkpoint is good."""


@dataclasses.dataclass
class TrainResult:
  state: Any  # final train state (on the mesh)
  step: int
  rows: list[dict]  # metrics rows logged by this invocation
  val: dict | None  # last validation metrics
  stopped_early: bool  # preempted or max_steps_per_run reached


def real_tokens(host_batch: dict) -> int:
  steps_b = host_batch["time_mask"].sum(1)
  chans_b = host_batch["obs_mask"].sum(1) + host_batch["act_mask"].sum(1)
  return int((steps_b * chans_b).sum())


class StepLog:
  """The metrics of this invocation. Train-step metrics stay on the device until `flush` (one step
  late, so the fetch overlaps the next step), which stops the run on a non-finite loss and writes a
  row every log.every steps and at the last step: the step's metrics, their means over the steps
  since the previous row, throughput and the batch's data checksum. Validation rows as they come."""

  def __init__(self, writer: logs.MetricsWriter, bar: tqdm.tqdm, every: int, end: int, ckpt: ckpt_lib.Checkpointer):
    self.writer, self.bar, self.every, self.end, self.ckpt = writer, bar, every, end, ckpt
    self.rows: list[dict] = []
    self.pending: list[tuple[int, Any, int, int]] = []  # (step, device metrics, tokens, data crc)
    self._start_window()

  def _start_window(self) -> None:
    self.tokens, self.steps, self.sums, self.t0 = 0, 0, {}, time.perf_counter()

  def add(self, step: int, metrics: Any, tokens: int, crc: int) -> None:
    self.pending.append((step, metrics, tokens, crc))

  def flush(self) -> None:
    """Fetches the pending step metrics, stops on a non-finite loss, writes the rows that are due."""
    pending, self.pending = self.pending, []
    for s, m, tok, crc in pending:
      m = jax.device_get(m)
      if not bool(m["ok"]):
        raise self._non_finite(s, m)
      self.tokens += tok
      self.steps += 1
      for k in ("loss", "nll", "aux_loss"):
        if k in m:
          self.sums[k] = self.sums.get(k, 0.0) + float(m[k])
      if s % self.every == 0 or s == self.end:
        self._write_row(s, m, crc)

  def _write_row(self, s: int, m: dict, crc: int) -> None:
    dt = max(time.perf_counter() - self.t0, 1e-9)
    means = {f"{k}_mean": v / self.steps for k, v in self.sums.items()}
    rates = {
      "tokens_per_s": self.tokens * jax.process_count() / dt,
      "steps_per_s": self.steps / dt,
      "data_crc": crc,
    }
    row = self.writer.write(s, {k: v for k, v in m.items() if k != "ok"} | means | rates)
    self.rows.append(row)
    self.bar.set_postfix(loss=f"{row['loss_mean']:.4f}", lr=f"{row['lr']:.2e}")
    self._start_window()

  def _non_finite(self, s: int, m: dict) -> NonFiniteLossError:
    good = self.ckpt.latest_step()
    where = (
      f"the last good checkpoint is step {good} in {self.ckpt.directory}; rerunning resumes from it"
      if good is not None
      else "no checkpoint was written yet"
    )
    return NonFiniteLossError(
      f"non-finite loss ({float(m['loss'])}) or gradient norm ({float(m['grad_norm'])}) at step {s}; "
      f"the update was discarded and nothing was saved: {where}. Lower optim.lr or check the data."
    )

  def validation(self, s: int, val: dict) -> None:
    self.rows.append(self.writer.write(s, val))
    self.bar.write(f"step {s}: " + ", ".join(f"{k}={v:.4f}" for k, v in val.items() if "/" not in k))


class Sigterm:
  """While entered, SIGTERM (preemption) and a first Ctrl-C (SIGINT) set `received` instead of killing
  the process; the loop saves and stops at the next step boundary (a second Ctrl-C interrupts at once).
  `agreed(step)` is the flag of all processes of a multi-host run (each stops at the same step): they
  agree every `sync_every` steps, not every step (a collective per step would hold every host to the
  slowest one's pace). Off the main thread there is no signal handling."""

  def __init__(self, sync_every: int = 1):
    self.received = ""
    self.sync_every = max(1, int(sync_every))
    self._old: dict = {}

  def _handle(self, signum, _frame) -> None:
    self.received = signal.Signals(signum).name
    if signum == signal.SIGINT:  # the next Ctrl-C is Python's KeyboardInterrupt again
      signal.signal(signal.SIGINT, self._old.get(signal.SIGINT, signal.default_int_handler))

  def __enter__(self) -> "Sigterm":
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def agreed(self, step: int) -> str:
    """The signal's name if this process or (multi-host, at a step that is a multiple of sync_every)
    any process received one, else ''."""
    if jax.process_count() == 1:
      return self.received
    if step % self.sync_every:
      return ""
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    got = multihost_utils.process_allgather(np.int32(bool(self.received)))
    return (self.received or "SIGTERM") if np.any(got) else ""

  def __exit__(self, *exc) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _resume(ckpt: ckpt_lib.Checkpointer, target: Any, iterator, identity: dict, config: dict) -> Any | None:
  """The latest checkpoint's state (onto target's shardings; the iterator restored in place), or
  None when the workdir holds none; config changes since that step are reported."""
  try:
    found = ckpt.restore_latest(target, iterator, identity)
  except BaseException:
    ckpt.close(quiet=True)
    raise
  if found is None:
    return None
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
  return state


def _close(bar: tqdm.tqdm, ckpt: ckpt_lib.Checkpointer, writer: logs.MetricsWriter, failing: bool) -> None:
  """Closes the run's outputs. failing: an error is in flight (the one to report), so closing errors
  are dropped; else the last asynchronous save's failure raises CheckpointSaveError."""
  bar.close()
  try:
    ckpt.close(quiet=failing)
  except BaseException:
    failing = True
    raise
  finally:
    try:
      writer.close()
    except OSError:  # e.g. the disk is full: the checkpoint error says so
      if not failing:
        raise


def train(cfg, workdir: str) -> TrainResult:
  validate.check_training_config(cfg)
  maybe_initialize_distributed(cfg)
  workdir = os.path.abspath(workdir)
  if jax.process_index() != 0:  # one lock per run: process 0's (the writer of metrics and run files)
    return _train(cfg, workdir)
  with workdir_lock.held(workdir):
    return _train(cfg, workdir)


def train_to_end(cfg, workdir: str) -> TrainResult:
  """`train` for the drivers that go on with the trained model (evaluate it, train the next run): a run
  that stopped early raises Interrupted, so a signal stops the whole driver and nothing evaluates a
  half-trained model; rerunning the driver resumes the run."""
  result = train(cfg, workdir)
  if result.stopped_early:
    raise Interrupted(f"training in {workdir} stopped at step {result.step}: rerun the same command to resume")
  return result


def _train(cfg, workdir: str) -> TrainResult:
  rules = mesh_lib.config_rules(cfg.mesh)
  model = run_files.build_model(cfg.model, rules)
  mesh = mesh_lib.make_mesh(cfg.mesh)
  validate.check_data_config(cfg, model, mesh)
  envs = corpus_lib.ensure_corpus(cfg.data)
  validate.check_corpus_fits_model(cfg.data, envs, model)
  tx, schedule = state_lib.make_optimizer(cfg.optim, cfg.total_steps)
  identity = ckpt_lib.run_identity(cfg.model.name, model.config, cfg.data, envs)
  config = ckpt_lib.config_dict(cfg)
  record = ckpt_lib.run_record(identity, config)

  iterator = pipeline.make_iterator(corpus_lib.pipeline_config(cfg.data, envs, cfg.seed))
  abstract = state_lib.abstract_state(model, tx, cfg.seed, mesh, rules)
  shardings = mesh_lib.state_shardings(model, abstract, mesh, rules)
  ckpt = ckpt_lib.Checkpointer(workdir, cfg.checkpoint.keep, cfg.checkpoint.async_save)
  with jax.set_mesh(mesh):
    state = _resume(ckpt, ckpt_lib.with_shardings(abstract, shardings), iterator, identity, config)
    if state is None:
      state, _ = state_lib.create_sharded_state(model, tx, cfg.seed, mesh, rules)
      if cfg.init_from:
        state = finetune.with_pretrained_params(state, cfg.init_from, shardings)
  start = int(jax.device_get(state["step"]))
  run_files.write_run_files(cfg, workdir, envs)
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
  writer.text("config", "    " + str(cfg).replace("\n", "\n    "), start)  # indented: markdown code
  end = cfg.total_steps
  if cfg.max_steps_per_run:
    end = min(end, start + cfg.max_steps_per_run)
  bar = tqdm.tqdm(
    total=cfg.total_steps,
    initial=start,
    desc="train",
    unit="step",
    disable=jax.process_index() != 0 or not cfg.log.progress,
  )
  log = StepLog(writer, bar, cfg.log.every, end, ckpt)
  val = None
  with Sigterm(sync_every=cfg.log.every) as sigterm:
    try:
      with jax.set_mesh(mesh):
        s = start
        while s < end:
          host_batch = next(iterator)
          tok = real_tokens(host_batch)
          crc = zlib.crc32(np.ascontiguousarray(host_batch["obs"]).tobytes())
          state, metrics = train_step(state, to_global(host_batch, batch_sharding))
          log.flush()  # the previous step's metrics, while this one runs
          s += 1
          log.add(s, metrics, tok, crc)
          bar.update(1)

          preempted = sigterm.agreed(s)  # read once: a preempted run always saves before it stops
          save = s % cfg.checkpoint.every == 0 or s == end or preempted
          validating = s % cfg.eval.every == 0 or s == cfg.total_steps
          if save or validating:
            log.flush()  # never save or evaluate past an unchecked step
          if validating:
            val = validator(state["params"], s, workdir)
            if val:
              log.validation(s, val)
              writer.image("val/prediction", validator.last_plot, s)
          if save:
            ckpt.save(s, state, iterator, record, force=True)
          if preempted:
            bar.write(f"{preempted}: saved step {s} in {ckpt.directory}; rerun the same command to resume")
            break
        log.flush()
    except BaseException:
      _close(bar, ckpt, writer, failing=True)
      raise
    _close(bar, ckpt, writer, failing=False)
  return TrainResult(state, s, log.rows, val, s < cfg.total_steps)
