"""grain window pipeline: masks, normalisation, splits, mixture, per-host sharding, exact resume."""

import collections

import numpy as np
import pytest

from westworld_jax.data import collect, pipeline, shards
from experiments import data as data_config

ENVS = ("dmc_cheetah-ou", "dmc_cheetah-gait", "dmc_reacher-pd_targets", "gym_swimmer-ou")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  c = data_config.get_config("tiny")
  c.corpus_dir = str(tmp_path_factory.mktemp("corpus"))
  c.environments = ENVS
  c.episodes_per_env = 8
  c.episodes_per_shard = 4
  c.episode_len = 320  # 2 full windows + a 20-step tail per episode
  c.val_fraction = 0.25
  collect.collect(c)
  return c.corpus_dir


def _cfg(corpus, **kw):
  return pipeline.PipelineConfig(corpus, ENVS, batch_size=4, num_threads=0, **kw)


def test_batches_are_padded_masked_and_normalised(corpus):
  ds, envs = pipeline.make_dataset(_cfg(corpus))
  for i in range(8):
    b = ds[i]
    B, T, Co = b["obs"].shape
    assert (B, T) == (4, 150) and Co in pipeline.DEFAULT_OBS_BUCKETS
    assert b["obs"].min() >= 0 and b["obs"].max() <= 1
    for j in range(B):
      e = envs[b["env_id"][j]]
      assert b["obs_mask"][j].sum() == e.num_obs and b["act_mask"][j].sum() == e.num_act
      assert not b["obs"][j][:, ~b["obs_mask"][j]].any()  # padded channels are zero
      assert not b["obs"][j][~b["time_mask"][j]].any()  # padded steps are zero
      assert (b["obs_struct"][j][~b["obs_mask"][j]] == 0).all()
      # Every window has more than `history` real steps.
      assert b["time_mask"][j].sum() > 50


def test_statistics_come_from_training_episodes_only(corpus):
  meta = shards.load_metadata(f"{corpus}/{ENVS[0]}")
  eps = [ep for s in range(meta["num_shards"]) for ep in shards.read_shard(f"{corpus}/{ENVS[0]}", s)]
  train = [ep["obs"] for ep, info in zip(eps, meta["episodes"]) if not info["val"]]
  assert any(info["val"] for info in meta["episodes"])
  np.testing.assert_allclose(meta["stats"]["obs_min"], np.concatenate(train).min(0), rtol=1e-6)
  np.testing.assert_allclose(meta["stats"]["obs_max"], np.concatenate(train).max(0), rtol=1e-6)


def test_validation_windows_come_from_other_episodes(corpus):
  tr = pipeline.load_env(_cfg(corpus), 0, ENVS[0]).windows
  va = pipeline.load_env(_cfg(corpus, split="val"), 0, ENVS[0]).windows
  assert len(tr) and len(va)
  assert not ({tuple(w[:2]) for w in tr} & {tuple(w[:2]) for w in va})
  ds, _ = pipeline.make_dataset(_cfg(corpus, split="val", repeat=False, shuffle=False))
  assert len(ds) > 0


def test_iterator_state_resumes_exactly(corpus):
  it = pipeline.make_iterator(_cfg(corpus))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  it2 = pipeline.make_iterator(_cfg(corpus))
  it2.set_state(state)
  for e in expected:
    got = next(it2)
    for k in e:
      np.testing.assert_array_equal(got[k], e[k])


def test_processes_load_their_rows_of_the_same_global_batches(corpus):
  """Two processes' batches, stacked, are the one-process global batches: the run does not depend on
  how many processes feed it (each loads only its own rows)."""
  one, _ = pipeline.make_dataset(_cfg(corpus))
  d0, _ = pipeline.make_dataset(_cfg(corpus, process_index=0, process_count=2))
  d1, _ = pipeline.make_dataset(_cfg(corpus, process_index=1, process_count=2))
  for i in range(10):
    assert d0[i]["obs"].shape[0] == d1[i]["obs"].shape[0] == one[i]["obs"].shape[0] // 2
    for k in one[i]:
      np.testing.assert_array_equal(np.concatenate([d0[i][k], d1[i][k]]), one[i][k])


def test_mixture_weights(corpus):
  cfg = _cfg(corpus, weights=(3.0, 1.0, 0.0, 0.0))
  ds, _ = pipeline.make_dataset(cfg)
  counts = collections.Counter(int(e) for i in range(100) for e in ds[i]["env_id"])
  assert counts[2] == counts[3] == 0
  assert 2.0 < counts[0] / counts[1] < 4.5


def test_too_many_channels_is_a_clear_error(corpus):
  with pytest.raises(ValueError, match="largest bucket is 8: add a bigger one"):
    pipeline.make_dataset(_cfg(corpus, obs_buckets=(8,)))
