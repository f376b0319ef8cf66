"""Injected faults in training: damaged checkpoints (fall back to the newest step that restores),
a changed config on resume (optimizer changes reported field by field and kept per checkpoint,
model changes refused), bad numeric fields, a disk full during a save, a checkpoint of another
version, and the command line's one-line errors."""

import errno
import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import pytest

from tests.test_train import REPO_ROOT, _cfg, _rows
from westworld_jax import inference
from westworld_jax.training import checkpoint as ckpt_lib
from westworld_jax.training import loop
from westworld_jax.training import run_files
from westworld_jax.training import validate
from tests.hang_guard import guard

NO_EVAL = {"eval.every": 10**6}  # no validation: one compilation less per run


def _c(corpus, **overrides):
  return _cfg(corpus, **{**NO_EVAL, **overrides})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A run stopped at step 4 with checkpoints 2 and 4 (kept pristine; tests copy it)."""
  root = tmp_path_factory.mktemp("faults")
  corpus, wd = root / "corpus", str(root / "base")
  loop.train(_c(corpus, max_steps_per_run=4), wd)
  return {"root": root, "corpus": corpus, "dir": wd}


def _copy(base, name):
  dst = str(base["root"] / name)
  shutil.copytree(base["dir"], dst)
  return dst


def _truncate_largest(wd, step):
  path = max(
    glob.glob(os.path.join(wd, "checkpoints", str(step), "state", "ocdbt.process_0", "d", "*")), key=os.path.getsize
  )
  with open(path, "r+b") as f:
    f.truncate(1000)


def _steps(wd):
  return sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints")) if s.isdigit())


def _warnings(caplog):
  return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.timeout(120)
def test_truncated_latest_checkpoint_falls_back_to_the_older_one(base, caplog):
  wd = _copy(base, "truncated")
  _truncate_largest(wd, 4)
  with caplog.at_level(logging.WARNING):
    res = loop.train(_c(base["corpus"], max_steps_per_run=1), wd)
  assert res.step == 3
  assert "checkpoint step 4" in _warnings(caplog) and "resuming from step 2 instead" in _warnings(caplog)
  assert os.path.isdir(os.path.join(wd, ckpt_lib.DAMAGED_DIR, "4"))  # kept, out of the way
  assert _steps(wd) == [2, 3]
  ref, rows = _rows(base["dir"]), _rows(wd)  # step 3 again: same data, same loss
  assert rows[3]["data_crc"] == ref[3]["data_crc"] and rows[3]["loss"] == ref[3]["loss"]


@pytest.mark.timeout(60)
def test_every_checkpoint_damaged_is_one_error_listing_them(base):
  wd = _copy(base, "all_damaged")
  _truncate_largest(wd, 4)
  with open(os.path.join(wd, "checkpoints", "2", "state", "_METADATA"), "r+b") as f:
    f.truncate(100)
  with pytest.raises(
    ckpt_lib.CheckpointDamagedError,
    match=r"(?s)no checkpoint in .* can be restored:\n  step 4 .*OUT_OF_RANGE.*\n  step 2 .*2/state/_METADATA",
  ):
    loop.train(_c(base["corpus"], max_steps_per_run=1), wd)
  assert _steps(wd) == [2, 4]  # nothing moved or deleted


@pytest.mark.timeout(60)
def test_truncated_metadata_file_is_named(base, caplog):
  wd = _copy(base, "metadata")
  path = os.path.join(wd, "checkpoints", "4", "run", "metadata")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with caplog.at_level(logging.WARNING):
    _, _, _, step = inference.load_for_inference(wd, with_step=True)
  assert step == 2
  assert f"{path} is not valid JSON (truncated?)" in _warnings(caplog)


@pytest.mark.timeout(120)
def test_changed_lr_is_reported_and_each_checkpoint_keeps_its_config(base, caplog):
  wd = _copy(base, "lr")
  with caplog.at_level(logging.WARNING):
    res = loop.train(_c(base["corpus"], max_steps_per_run=1, **{"optim.lr": 0.004}), wd)
  assert res.step == 5
  assert "optim.lr: 0.002 -> 0.004" in _warnings(caplog)
  assert "max_steps_per_run" not in _warnings(caplog)  # per invocation, not a change of the run
  ck = ckpt_lib.Checkpointer(wd, async_save=False)
  assert ck.read_record(4)["config"]["optim"]["lr"] == 0.002
  assert ck.read_record(5)["config"]["optim"]["lr"] == 0.004
  ck.close()
  with open(os.path.join(wd, run_files.RUN_FILE)) as f:
    assert json.load(f)["optim"]["lr"] == 0.004


@pytest.mark.timeout(60)
def test_changed_model_or_seed_is_refused(base):
  wd = _copy(base, "model")
  rate = _c(base["corpus"]).model.dropout_rate
  with pytest.raises(
    ckpt_lib.CheckpointMismatchError, match=rf"model\.dropout_rate: checkpoint {rate} vs config {rate + 0.25}"
  ):
    loop.train(_c(base["corpus"], **{"model.dropout_rate": rate + 0.25}), wd)
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"seed: 0 -> 1"):
    loop.train(_c(base["corpus"], seed=1), wd)
  assert _steps(wd) == [2, 4]


def test_numeric_fields_are_checked_before_any_work(tmp_path):
  corpus = tmp_path / "no_corpus"  # nothing is generated: the check comes first
  with pytest.raises(validate.ConfigError, match=r"^data\.batch_size must be > 0 \(got 0\)$"):
    loop.train(_c(corpus, **{"data.batch_size": 0}), str(tmp_path / "w"))
  with pytest.raises(
    validate.ConfigError, match=r"total_steps must be > 0.*optim\.lr must be >= 0.*log\.every must be > 0"
  ):
    loop.train(_c(corpus, total_steps=0, **{"optim.lr": -1.0, "log.every": 0}), str(tmp_path / "w"))
  with pytest.raises(validate.ConfigError, match=r"^data\.environments must be a tuple of environment names"):
    loop.train(_c(corpus, **{"data.environments": (5,)}), str(tmp_path / "w"))
  assert not os.path.exists(corpus) and not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("name", ["trajworld", "tdm", "mlp_ensemble"])
def test_readmes_model_switch_builds_every_model(name, caplog):
  """`--config.model.name=NAME` on pretrain.py (westworld's fields): NAME at the config's size, with the
  fields they share carried over where the config changed them; a westworld-only change is warned."""
  from experiments import pretrain  # pylint: disable=import-outside-toplevel
  from westworld_jax.model import registry  # pylint: disable=import-outside-toplevel

  cfg = pretrain.get_config("tiny")
  cfg.model.name = name
  run_files._WARNED.clear()
  with caplog.at_level(logging.WARNING):
    model = run_files.build_model(cfg.model)
  want = registry.build(name, "tiny", max_obs_channels=32, max_act_channels=16).config
  assert model.name == name and model.config == want
  assert "config.model.ssm_scan_impl='sequential' is a field of westworld, not of " + name in _warnings(caplog)


def test_a_config_the_model_or_mesh_cannot_take_is_a_config_error(tmp_path):
  corpus = tmp_path / "no_corpus"  # nothing is generated: the checks come first
  with pytest.raises(validate.ConfigError, match=r"config\.model \(model westworld, size tiny\): d_model=7 must be"):
    loop.train(_c(corpus, **{"model.d_model": 7}), str(tmp_path / "w"))
  with pytest.raises(validate.ConfigError, match=r"mesh sizes \[-1, 3\] need a multiple of 3 devices"):
    loop.train(_c(corpus, **{"mesh.expert": 3}), str(tmp_path / "w"))
  assert not os.path.exists(corpus) and not os.path.exists(tmp_path / "w")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["fails", "hangs"])
def test_a_tensorboard_writer_that_fails_or_hangs_never_stops_training(base, caplog, monkeypatch, fault):
  """The event file's writes fail (a full disk) or never return (a hung filesystem) after its first
  events: the run goes on to the end with one warning; metrics.jsonl and checkpoints are complete."""
  import threading  # pylint: disable=import-outside-toplevel

  from tensorboardX import event_file_writer  # pylint: disable=import-outside-toplevel

  write_event, unblock = event_file_writer.EventsWriter.write_event, threading.Event()

  def faulty(self, event):
    if getattr(self, "_events", 0) >= 2:  # the file's version and the purge mark are written
      if fault == "fails":
        raise OSError(errno.ENOSPC, "No space left on device")
      unblock.wait(120)
    self._events = getattr(self, "_events", 0) + 1  # pylint: disable=protected-access
    return write_event(self, event)

  monkeypatch.setattr(event_file_writer.EventsWriter, "write_event", faulty)
  wd = _copy(base, f"tb_{fault}")
  try:
    with caplog.at_level(logging.WARNING):
      res = loop.train(_c(base["corpus"], max_steps_per_run=4, **{"log.tensorboard": True}), wd)
  finally:
    unblock.set()
  assert res.step == 8 and _steps(wd)[-1] == 8
  why = "No space left on device" if fault == "fails" else "it did not finish writing"
  assert _warnings(caplog).count("TensorBoard events are no longer written") == 1 and why in _warnings(caplog)
  assert sorted(_rows(wd, "loss")) == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.timeout(150)
def test_disk_full_during_a_save_stops_cleanly_and_the_rerun_resumes(base, monkeypatch):
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as json_handler

  wd = _copy(base, "disk_full")

  def full(self, x, directory):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(json_handler.JsonCheckpointHandler, "_save_fn", full)
  with pytest.raises(
    ckpt_lib.CheckpointSaveError, match=r"saving checkpoint step 5 .*No space left on device.*intact \(latest: step 4\)"
  ):
    loop.train(_c(base["corpus"], max_steps_per_run=1), wd)
  monkeypatch.undo()
  assert _steps(wd) == [2, 4]
  res = loop.train(_c(base["corpus"], max_steps_per_run=1), wd)
  assert res.step == 5 and _steps(wd) == [2, 4, 5]
  assert not glob.glob(os.path.join(wd, "checkpoints", "*tmp*"))  # the partial save is gone


@pytest.mark.timeout(60)
def test_checkpoint_of_another_version_is_refused_clearly(base, monkeypatch):
  wd = _copy(base, "version")
  path = os.path.join(wd, "checkpoints", "4", "run", "metadata")
  with open(path) as f:
    record = json.load(f)
  with open(path, "w") as f:
    json.dump({**record, "format": 99, "version": "9.9"}, f)
  with pytest.raises(
    ckpt_lib.CheckpointMismatchError, match=r"format 99 \(written by westworld_jax 9\.9\).*new --workdir"
  ):
    loop.train(_c(base["corpus"]), wd)
  with open(path, "w") as f:
    json.dump(record, f)

  # A param tree of another structure (as a version that renamed a layer would build).
  real = loop.state_lib.abstract_state

  def renamed(*args):
    s = real(*args)
    return {**s, "params": {**s["params"], "extra": jax.ShapeDtypeStruct((3,), "float32")}}

  monkeypatch.setattr(loop.state_lib, "abstract_state", renamed)
  with pytest.raises(
    ckpt_lib.CheckpointMismatchError,
    match=r"(?s)params\.extra: in this model, not in the checkpoint.*another version.*new --workdir",
  ):
    loop.train(_c(base["corpus"]), wd)
  assert _steps(wd) == [2, 4]


def _train_cli(tmp_path, flag: str):
  """The tiny training command with one extra flag: (process, its non-empty output lines)."""
  cmd = [sys.executable, "-m", "westworld_jax.train", "--config", "experiments/pretrain.py:tiny"]
  proc = subprocess.run(
    cmd + [f"--workdir={tmp_path / 'w'}", flag], cwd=REPO_ROOT, capture_output=True, text=True, timeout=guard(110)
  )
  return proc, [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


@pytest.mark.timeout(120)
def test_cli_prints_one_error_line_and_exits_2(tmp_path):
  proc, lines = _train_cli(tmp_path, "--config.data.batch_size=0")
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert lines == ["error: data.batch_size must be > 0 (got 0)"], lines


@pytest.mark.timeout(120)
def test_cli_reports_a_bad_config_flag_in_one_line(tmp_path):
  proc, lines = _train_cli(tmp_path, "--config.optim.lrr=1")
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert len(lines) == 1 and lines[0].startswith("error: bad command-line flag: ") and "lrr" in lines[0], lines
  assert not os.path.exists(tmp_path / "w")
  # an unknown config variant (the config file raises, absl embeds its traceback): one line, status 2
  proc, lines = _train_cli(tmp_path, "--config=experiments/pretrain.py:nope")
  want = "error: --config=experiments/pretrain.py:nope: unknown pretrain variant 'nope'"
  assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(want), lines
  # an unknown flag, a value of the wrong type: absl's errors as cli's one line
  from absl import flags as absl_flags  # pylint: disable=import-outside-toplevel

  from westworld_jax import cli  # pylint: disable=import-outside-toplevel

  fv = absl_flags.FlagValues()
  absl_flags.DEFINE_integer("steps", 1, "", flag_values=fv)
  for argv, want in (
    (["prog", "--nope=1"], "Unknown command line flag 'nope' (--helpshort lists the flags)"),
    (["prog", "--steps=abc"], "--steps=abc: invalid literal for int()"),
  ):
    with pytest.raises(absl_flags.Error) as e:
      fv(argv)
    assert cli._flag_error(e.value).startswith(want), cli._flag_error(e.value)


@pytest.mark.timeout(120)
def test_an_export_loads_the_same_parameters_and_a_damaged_one_is_one_error(base):
  import numpy as np  # pylint: disable=import-outside-toplevel

  import westworld_jax as ww  # pylint: disable=import-outside-toplevel
  from westworld_jax.errors import UserError  # pylint: disable=import-outside-toplevel

  out = str(base["root"] / "export")
  info = inference.export(base["dir"], out, card="# a card\n")
  assert info["step"] == 4 and info["params"] > 0
  assert sorted(os.listdir(out)) == ["MODEL_CARD.md", "data_stats.json", "export.json", "params", "run_config.json"]
  _, want, _ = inference.load_for_inference(base["dir"])
  model = ww.load(out)
  assert model.step == 4
  for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  size = sum(
    os.path.getsize(p) for p in glob.glob(os.path.join(out, "params", "**"), recursive=True) if os.path.isfile(p)
  )
  state = sum(
    os.path.getsize(p)
    for p in glob.glob(os.path.join(base["dir"], "checkpoints", "4", "state", "**"), recursive=True)
    if os.path.isfile(p)
  )
  assert size < 0.6 * state  # parameters alone, no optimizer state
  damaged = str(base["root"] / "export_damaged")
  shutil.copytree(out, damaged)
  for p in glob.glob(os.path.join(damaged, "params", "**", "d", "*"), recursive=True):
    with open(p, "r+b") as f:
      f.truncate(10)
  with pytest.raises(UserError, match="do not restore into the model"):
    ww.load(damaged)


@pytest.mark.timeout(300)
def test_finetune_from_an_export_on_a_users_episodes(base):
  """Model.finetune: the user's episodes of a robot -> corpus environment -> a fine-tuning run from the
  export's weights -> the fine-tuned Model, normalised with those episodes (dmc_reacher's as user data)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  import westworld_jax as ww  # pylint: disable=import-outside-toplevel
  from westworld_jax.data import shards  # pylint: disable=import-outside-toplevel

  out = str(base["root"] / "export_ft")
  inference.export(base["dir"], out)
  model = ww.load(out)
  env_dir = os.path.join(str(base["corpus"]), "dmc_reacher-ou")
  eps = [e for s in range(shards.load_metadata(env_dir)["num_shards"]) for e in shards.read_shard(env_dir, s)]
  wd = str(base["root"] / "ft")
  tuned = model.finetune("dmc_reacher", eps, wd, steps=2, lr=1e-3, batch_size=4, val_fraction=0.34)
  assert tuned.step == 2 and tuned.source == os.path.join(wd, "run")
  meta = shards.load_metadata(os.path.join(wd, "corpus", "dmc_reacher-finetune"))
  assert len(meta["episodes"]) == len(eps) and 0 < sum(e["val"] for e in meta["episodes"]) < len(eps)
  moved = [
    float(np.abs(np.asarray(a) - np.asarray(b)).max())
    for a, b in zip(jax.tree.leaves(tuned.params), jax.tree.leaves(model.params))
  ]
  assert max(moved) > 0
  w = ww.windows(eps, tuned.history, 4, stride=20)
  pred = tuned.predict("dmc_reacher", w.obs, w.act, w.future_act)  # the fine-tuning data's min-max, no warning
  assert pred.shape == w.future_obs.shape and np.isfinite(pred).all()
  assert "dmc_reacher-finetune" in tuned.data_stats
  # the README's evaluation of it: held-out episodes of an environment it trained on, said so on the page
  from westworld_jax import config_files, evaluate  # pylint: disable=import-outside-toplevel

  cfg = config_files.load_sibling(os.path.join(REPO_ROOT, "experiments", "zero_shot.py"), "zero_shot").get_config(
    "tiny"
  )
  cfg.corpus_dir, cfg.environments, cfg.require_unseen = os.path.join(wd, "corpus"), ("dmc_reacher-finetune",), False
  cfg.horizon, cfg.plot_windows = 4, 0
  evaluate.evaluate(cfg, [(None, os.path.join(wd, "run"))], str(base["root"] / "ft_eval"))
  with open(base["root"] / "ft_eval" / "results.md") as f:
    assert f.readline().startswith(
      "# Prediction on held-out episodes of environments a model trained on (dmc_reacher-finetune)"
    )
  # the same episodes as the user's file (--robot/--data): its own import would hold out others, but the
  # episodes the run trained on are never scored; exactly the fine-tuning split's held-out ones are
  data = str(base["root"] / "my_reacher.npz")
  np.savez(
    data,
    observations=np.concatenate([e["obs"] for e in eps]),
    actions=np.concatenate([e["act"] for e in eps]),
    terminals=np.concatenate([np.arange(len(e["obs"])) == len(e["obs"]) - 1 for e in eps]),
  )
  cfg.import_val_fraction = 0.9
  evaluate.evaluate(cfg, [(None, os.path.join(wd, "run"))], str(base["root"] / "ft_eval_file"), "dmc_reacher", data)
  ft_env = os.path.join(wd, "corpus", "dmc_reacher-finetune")
  held = {split: {shards.episode_digest(e) for e in shards.read_episodes(ft_env, split)} for split in ("val", "train")}
  scored = shards.read_episodes(str(base["root"] / "ft_eval_file" / "imported" / "my_reacher"), "val")
  assert {shards.episode_digest(e) for e in scored} == held["val"] and not held["val"] & held["train"]


@pytest.mark.timeout(120)
def test_a_second_training_on_a_busy_workdir_is_refused_and_loses_nothing(base):
  from westworld_jax.training import workdir_lock  # pylint: disable=import-outside-toplevel

  wd = _copy(base, "busy")
  before = sorted(os.listdir(os.path.join(wd, "checkpoints")))
  with workdir_lock.held(wd):  # as a running training holds it (another open file: flock conflicts)
    with pytest.raises(workdir_lock.WorkdirBusyError, match=r"in use by another training run \(pid \d+"):
      loop.train(_c(base["corpus"], max_steps_per_run=1), wd)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == before
  with workdir_lock.held(wd):  # released when the holder ends: the next run takes it
    pass


def test_the_command_boundary_prints_disk_errors_and_ctrl_c_in_one_line(capsys):
  from westworld_jax import cli  # pylint: disable=import-outside-toplevel

  cases = (
    (OSError(errno.ENOSPC, "No space left on device", "/w/checkpoints/8"), 2, "error: /w/checkpoints/8: No space"),
    (OSError(errno.EROFS, "Read-only file system", "/w"), 2, "error: /w: Read-only file system: the filesystem is"),
    (FileExistsError(errno.EEXIST, "File exists", "/w"), 2, "error: /w: File exists: a file stands where"),
    (KeyboardInterrupt(), 130, "interrupted (a training run saves on the first Ctrl-C"),
  )
  for exc, code, want in cases:

    def main(_, exc=exc):
      raise exc

    with pytest.raises(SystemExit) as e:
      cli._guarded(main)(["prog"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == code and len(err) == 1 and err[0].startswith(want), err
  with pytest.raises(OSError):  # an OSError of no disk condition is a bug: its traceback stays
    cli._guarded(lambda _: (_ for _ in ()).throw(OSError(errno.EPIPE, "Broken pipe")))(["prog"])
