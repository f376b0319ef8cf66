"""Injected data faults: re-imports, damaged shards, edited metadata, bad import files. Each one is
refused with a CorpusError that names the environment (and the shard) and says what to do; the
collector repairs what it wrote; nothing is lost or left half-written."""

import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import data as data_config
from westworld_jax.data import collect, importers, pipeline, shards
from westworld_jax.robots import catalogue
from tests.hang_guard import guard

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = "dmc_cheetah-ou"


def _npz(path, lengths, seed=0, nan_in=()):
  r = catalogue.load("hopper")
  rng = np.random.default_rng(seed)
  n = sum(lengths)
  obs = rng.normal(size=(n, r.num_obs)).astype(np.float32)
  act = rng.uniform(-1, 1, (n, r.num_act)).astype(np.float32)
  ends = np.cumsum(lengths)
  for i in nan_in:
    obs[ends[i] - 1, 0] = np.nan
  np.savez(path, observations=obs, actions=act, episode_ends=ends)
  return str(path)


def _entries(d):
  """What is in d, besides the environments' lock files (data/shards.env_lock: they stay, empty of work)."""
  return sorted(e for e in os.listdir(d) if not e.endswith(".lock")) if os.path.isdir(d) else []


def _collect_cfg(corpus, **kw):
  c = data_config.get_config("tiny")
  c.corpus_dir = str(corpus)
  c.environments = (ENV,)
  c.episodes_per_env, c.episodes_per_shard, c.episode_len, c.nthread = 4, 2, 80, 2
  for k, v in kw.items():
    setattr(c, k, v)
  return c


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
  root = tmp_path_factory.mktemp("collected")
  collect.collect(_collect_cfg(root))
  return root


@pytest.fixture
def corpus(collected, tmp_path):
  """A private copy of the collected corpus, to damage."""
  dst = tmp_path / "corpus"
  shutil.copytree(collected, dst)
  return dst


def _load(corpus):
  return pipeline.make_dataset(pipeline.PipelineConfig(str(corpus), [ENV], batch_size=2, num_threads=0))


def _episodes(env_dir):
  meta = shards.verify_env(str(env_dir))
  return [ep for s in range(meta["num_shards"]) for ep in shards.read_shard(str(env_dir), s)]


# --- imports ---------------------------------------------------------------------------------


def test_reimport_under_an_existing_name_is_refused_and_overwrite_replaces_it_whole(tmp_path):
  out = tmp_path / "corpus"
  big = _npz(tmp_path / "big.npz", [60] * 10)
  small = _npz(tmp_path / "small.npz", [70] * 2, seed=1)
  importers.import_file("hopper", big, str(out), "X", episodes_per_shard=4)
  with pytest.raises(shards.CorpusError, match=r"X already exists \(10 episodes.*--overwrite"):
    importers.import_file("hopper", small, str(out), "X", episodes_per_shard=4)
  assert len(_episodes(out / "X")) == 10  # untouched
  meta = importers.import_file("hopper", small, str(out), "X", episodes_per_shard=4, overwrite=True)
  assert meta["num_shards"] == 1 and len(meta["episodes"]) == 2
  assert _entries(out) == ["X"]  # no staging directory left
  assert _entries(out / "X") == ["metadata.json", "shard-00000.array_record", "shard-00000.json"]
  eps = _episodes(out / "X")
  assert [len(e["obs"]) for e in eps] == [70, 70]
  np.testing.assert_array_equal(eps[0]["obs"], np.load(small)["observations"][:70])
  ds, _ = pipeline.make_dataset(
    pipeline.PipelineConfig(str(out), ["X"], batch_size=1, history=50, horizon=20, num_threads=0)
  )
  assert ds[0]["time_mask"].sum() == 70


def test_an_import_while_another_writes_the_environment_is_refused_and_loses_nothing(tmp_path):
  """Two imports under one name at once: the second is refused naming the first, which completes."""
  out = tmp_path / "corpus"
  first = _npz(tmp_path / "first.npz", [60] * 3)
  second = _npz(tmp_path / "second.npz", [60] * 4, seed=1)
  lock = shards.env_lock(str(out), "X", "importing X")  # as the first import holds it (its own open file)
  with lock:
    busy = rf"X is being written by another import or collection \(pid {os.getpid()} on"
    with pytest.raises(shards.CorpusError, match=busy):
      importers.import_file("hopper", second, str(out), "X")
    assert _entries(out) == []
  importers.import_file("hopper", first, str(out), "X")
  with pytest.raises(shards.CorpusError, match="X already exists"):  # checked again under the lock
    importers.import_file("hopper", second, str(out), "X")
  assert len(_episodes(out / "X")) == 3


def test_failed_import_leaves_nothing_behind(tmp_path, monkeypatch):
  data = _npz(tmp_path / "d.npz", [60] * 5)
  out = tmp_path / "corpus"

  def boom(*a, **k):
    raise OSError("disk full")

  monkeypatch.setattr(shards, "finalize", boom)
  with pytest.raises(OSError, match="disk full"):
    importers.import_file("hopper", data, str(out), "X", episodes_per_shard=2)
  assert not out.exists()  # not even the --out directory it created
  monkeypatch.undo()
  importers.import_file("hopper", data, str(out), "X", episodes_per_shard=2)
  monkeypatch.setattr(shards, "finalize", boom)
  with pytest.raises(OSError):
    importers.import_file("hopper", _npz(tmp_path / "e.npz", [60] * 2), str(out), "X", overwrite=True)
  assert _entries(out) == ["X"] and len(_episodes(out / "X")) == 5  # the old environment survives


def test_import_of_a_file_without_episodes_says_so(tmp_path):
  r = catalogue.load("hopper")
  path = tmp_path / "empty.npz"
  np.savez(
    path,
    observations=np.zeros((0, r.num_obs), np.float32),
    actions=np.zeros((0, r.num_act), np.float32),
    timeouts=np.zeros(0, bool),
  )
  with pytest.raises(shards.CorpusError, match="has no episodes"):
    importers.import_file("hopper", str(path), str(tmp_path / "corpus"), "E")
  assert not (tmp_path / "corpus").exists()


def test_import_names_bad_episode_ends_overflow_and_actions_out_of_range(tmp_path, caplog):
  r = catalogue.load("hopper")
  rng = np.random.default_rng(0)
  obs = rng.normal(size=(120, r.num_obs))
  act = rng.uniform(-1, 1, (120, r.num_act))
  out = str(tmp_path / "corpus")
  np.savez(tmp_path / "t.npz", observations=obs, actions=act, terminals=np.zeros(100, bool))
  with pytest.raises(shards.CorpusError, match=r"`terminals` has 100 entries for 120 steps"):
    importers.import_file("hopper", str(tmp_path / "t.npz"), out, "T")
  big = obs.copy()
  big[7, 2] = 1e300  # finite in float64, inf in float32: named as such, not as NaN/inf
  np.savez(tmp_path / "o.npz", observations=big, actions=act, episode_ends=[60, 120])
  with pytest.raises(
    shards.CorpusError, match=rf"beyond float32's range.*1e\+300 at row 7, channel {r.obs_channels[2].name}"
  ):
    importers.import_file("hopper", str(tmp_path / "o.npz"), out, "O")
  np.savez(tmp_path / "a.npz", observations=obs, actions=act * 1000, episode_ends=[60, 120])
  with pytest.raises(shards.CorpusError, match=r"3 of 3 action channels leave the control range.*--strict"):
    importers.import_file("hopper", str(tmp_path / "a.npz"), out, "A", strict=True)
  assert _entries(out) == []
  with caplog.at_level(logging.WARNING):
    importers.import_file("hopper", str(tmp_path / "a.npz"), out, "A")  # imported, with the warning
  assert f"{r.act_channels[0].name} [-9" in caplog.text and "(range [-1, 1])" in caplog.text


def test_too_short_episodes_are_reported_and_all_short_is_an_error(tmp_path, caplog):
  out = str(tmp_path / "corpus")
  with caplog.at_level(logging.WARNING):
    meta = importers.import_file("hopper", _npz(tmp_path / "m.npz", [60, 5, 7]), out, "M")
  assert len(meta["episodes"]) == 3  # kept (a smaller history may use them), but reported
  assert "2 of 3 episodes have at most history=50 steps" in caplog.text and "lengths 5, 7" in caplog.text
  with pytest.raises(shards.CorpusError, match=r"all 1 usable episodes are too short.*lengths 5\)") as e:
    importers.import_file("hopper", _npz(tmp_path / "s.npz", [5]), out, "S")
  assert "EpisodeChecks" not in str(e.value) and "max_abs_qvel" not in str(e.value)
  with pytest.raises(shards.CorpusError, match="none of its 2 episodes is usable") as e:
    importers.import_file("hopper", _npz(tmp_path / "n.npz", [60, 60], nan_in=(0, 1)), out, "N")
  assert "EpisodeChecks" not in str(e.value) and "max_abs_qvel" not in str(e.value)
  assert _entries(out) == ["M"]


# --- damaged corpora -------------------------------------------------------------------------


def test_a_second_collector_waits_for_the_first_and_writes_nothing(corpus, caplog):
  """Two processes collecting one environment (a multi-host run on a shared disk): the second waits on
  the environment's lock, then finds it complete; a complete environment is verified without a write
  (so a read-only corpus can be collected again)."""
  import threading  # pylint: disable=import-outside-toplevel

  meta_path = corpus / ENV / shards.METADATA
  before = os.stat(meta_path)
  lock, holding = shards.env_lock(str(corpus), ENV, "collecting"), threading.Event()

  def first():  # holds the lock until the collector has reported that it waits (a hang guard of 120 s)
    with lock:
      holding.set()
      for _ in range(1200):
        if "waiting for pid" in caplog.text:
          break
        time.sleep(0.1)

  t = threading.Thread(target=first)
  with caplog.at_level(logging.WARNING):
    t.start()
    holding.wait(60)
    collect.collect(_collect_cfg(corpus))
  t.join(60)
  assert "waiting for pid" in caplog.text and f".{ENV}.lock" in caplog.text
  after = os.stat(meta_path)
  assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
  assert _entries(corpus) == [ENV]


def test_truncated_shard_fails_at_load_and_the_collector_redoes_it(corpus, caplog):
  ref = _episodes(corpus / ENV)
  path = shards.shard_path(str(corpus / ENV), 1)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(shards.CorpusError, match=rf"'{ENV}'.*shard-00001.array_record is unreadable.*data.collect"):
    _load(corpus)
  with caplog.at_level(logging.WARNING):
    collect.collect(_collect_cfg(corpus))
  assert "shard-00001.array_record does not verify" in caplog.text
  again = _episodes(corpus / ENV)
  assert len(again) == len(ref)
  for a, b in zip(again, ref):
    np.testing.assert_array_equal(a["obs"], b["obs"])
  assert _entries(corpus) == [ENV]  # the staging directory was swapped in
  _load(corpus)


def test_deleted_shard_fails_at_load_and_the_collector_redoes_it(corpus):
  os.remove(shards.shard_path(str(corpus / ENV), 0))
  with pytest.raises(shards.CorpusError, match=rf"'{ENV}'.*shard-00000.array_record is missing"):
    _load(corpus)
  collect.collect(_collect_cfg(corpus))
  _load(corpus)


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda m: m["episodes"].pop(), r"shard-00001.array_record holds 2 records but metadata.json lists 1"),
    (lambda m: m.update(num_shards=1), r"metadata.json lists episodes of shard 1 but num_shards is 1"),
    (
      lambda m: m.update(num_shards=1, episodes=[e for e in m["episodes"] if e["shard"] == 0]),
      r"shard-00001.array_record is not part of metadata.json",
    ),
    (lambda m: m.update(num_shards=3), r"shard-00002.array_record is missing"),
    (lambda m: m["episodes"][0].update(length=79), r"lengths in metadata.json for .*shard-00000"),
    (lambda m: m["episodes"][1].update(index=5), r"episode indices \[0, 5\]"),
  ],
)
def test_metadata_edited_by_hand_is_caught_at_load(corpus, edit, match):
  path = corpus / ENV / shards.METADATA
  meta = json.loads(path.read_text())
  edit(meta)
  path.write_text(json.dumps(meta))
  with pytest.raises(shards.CorpusError, match=rf"'{ENV}'.*{match}"):
    _load(corpus)


def test_collector_refuses_an_environment_collected_with_other_settings(corpus):
  before = (corpus / ENV / shards.METADATA).read_text()
  with pytest.raises(shards.CorpusError, match=r"other settings \(shard 0: episode_len 80 -> 90\).*--overwrite"):
    collect.collect(_collect_cfg(corpus, episode_len=90))
  with pytest.raises(shards.CorpusError, match=r"2 shards in its metadata, the config asks for 3"):
    collect.collect(_collect_cfg(corpus, episodes_per_env=6))
  assert (corpus / ENV / shards.METADATA).read_text() == before
  meta = collect.collect(_collect_cfg(corpus, episodes_per_env=2), overwrite=True)[0]
  assert meta["num_shards"] == 1 and _entries(corpus / ENV) == [
    "metadata.json",
    "shard-00000.array_record",
    "shard-00000.json",
  ]
  _load(corpus)


def test_training_stops_on_a_damaged_shard_before_writing_its_workdir(corpus, tmp_path):
  from experiments import pretrain as pretrain_config
  from westworld_jax.training import loop

  os.remove(shards.shard_path(str(corpus / ENV), 1))
  c = pretrain_config.get_config("tiny")
  c.data.corpus_dir, c.data.environments, c.data.collect = str(corpus), (ENV,), None
  wd = tmp_path / "wd"
  with pytest.raises(shards.CorpusError, match="shard-00001.array_record is missing"):
    loop.train(c, str(wd))
  assert not wd.exists()


def test_cli_prints_one_error_line_and_exits_2(tmp_path):
  out = tmp_path / "corpus"
  data = _npz(tmp_path / "d.npz", [60] * 2)
  importers.import_file("hopper", data, str(out), "X")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "westworld_jax.data.importers",
      "--robot",
      "hopper",
      "--data",
      data,
      "--out",
      str(out),
      "--name",
      "X",
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=guard(120),
    env={**os.environ, "WESTWORLD_TRACEBACK": ""},
  )
  assert proc.returncode == 2, proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "already exists" in errors[0] and "--overwrite" in errors[0], proc.stderr
  assert "Traceback" not in proc.stderr


def test_a_damaged_policy_is_one_error_naming_its_file(tmp_path):
  from westworld_jax.data import train_policy  # pylint: disable=import-outside-toplevel

  root = tmp_path / "policies"
  shutil.copytree(os.path.dirname(train_policy.policy_dir("hopper", "expert")), root / "hopper")
  meta = root / "hopper" / "expert" / train_policy.META
  text = meta.read_text()
  meta.write_text(text[:50])
  with pytest.raises(
    train_policy.DamagedPolicyError, match=rf"{meta} is damaged \(JSONDecodeError.*train_policy --robot hopper"
  ):
    train_policy.load_policy("hopper", "expert", str(root))
  meta.write_text(text)
  for p in (root / "hopper" / "expert" / "params").rglob("*"):
    if p.is_file() and p.parent.name == "d":
      p.write_bytes(p.read_bytes()[:10])
  with pytest.raises(train_policy.DamagedPolicyError, match=r"params does not restore .*train_policy --robot hopper"):
    train_policy.load_policy("hopper", "expert", str(root))


def test_a_stray_file_among_the_shards_is_named(corpus):
  env_dir = corpus / ENV
  shutil.copy(env_dir / "shard-00000.json", env_dir / "shard-00000 (copy).json")
  with pytest.raises(shards.CorpusError, match=r"'shard-00000 \(copy\).json' in .* is not a shard of it.*move it out"):
    collect.collect(_collect_cfg(corpus))
  os.remove(env_dir / "shard-00000 (copy).json")
  collect.collect(_collect_cfg(corpus))


def test_a_full_disk_during_collection_is_the_disks_error_and_the_rerun_resumes(tmp_path, monkeypatch):
  """array_record reports ENOSPC as a RuntimeError: it becomes the OSError the commands print as one line
  (cli.py); the shards written before it are kept and the rerun completes the environment."""
  import errno  # pylint: disable=import-outside-toplevel

  real, calls = shards.array_record_module.ArrayRecordWriter, []

  class FullAfterOne:  # the disk fills while the second shard is written
    def __init__(self, path, options):
      calls.append(path)
      self.w = real(path, options)

    def write(self, record):
      if len(calls) > 1:
        raise RuntimeError(f"write() failed: No space left on device; writing {calls[-1]}; at byte 0")
      self.w.write(record)

    def close(self):
      self.w.close()

  monkeypatch.setattr(shards.array_record_module, "ArrayRecordWriter", FullAfterOne)
  corpus = tmp_path / "corpus"
  with pytest.raises(OSError) as e:
    collect.collect(_collect_cfg(corpus))
  assert e.value.errno == errno.ENOSPC and e.value.filename.endswith("shard-00001.array_record.tmp")
  monkeypatch.setattr(shards.array_record_module, "ArrayRecordWriter", real)
  collect.collect(_collect_cfg(corpus))
  assert len(_episodes(corpus / ENV)) == 4


def test_a_follower_waits_while_the_leader_writes_and_gives_up_once_nothing_changes(tmp_path):
  """data.shared_filesystem: the waiting processes follow process 0's progress on disk, finish when the
  corpus is complete, and end with one error naming what is missing when process 0 stops writing."""
  import threading

  from westworld_jax.training import corpus as corpus_lib

  env = tmp_path / "dmc_cheetah-gait"

  def leader():  # writes a shard now and then, then the metadata that completes the environment
    env.mkdir()
    for i in range(3):
      time.sleep(0.1)
      (env / f"shard_{i}").write_bytes(b"x")
    (env / shards.METADATA).write_text("{}")

  t = threading.Thread(target=leader)
  t.start()
  corpus_lib.wait_for_leader(str(tmp_path), [env.name], stall_s=5.0, poll_s=0.02)  # returns: complete
  t.join()
  with pytest.raises(shards.CorpusError, match=r"nothing changed for 0 s .* 1 environments \(\['gym_ant-gait'\]\)"):
    corpus_lib.wait_for_leader(str(tmp_path), ["gym_ant-gait"], stall_s=0.2, poll_s=0.05)
