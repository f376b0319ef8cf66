"""Baseline world models (TrajWorld, TDM, MLPEnsemble): the WorldModel contract, no future
leak, padding invariance, trainability, KV-cached rollouts vs naive recomputation, elites."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from westworld_jax.model import registry
from westworld_jax.model.baselines.layers import prepare_batch
from westworld_jax.model.baselines.mlp_ensemble import _Ensemble, elites, features
from westworld_jax.model.baselines.tdm import TDMNet
from westworld_jax.model.baselines.trajworld import TrajWorldNet
from westworld_jax.model.tokenizer import expectation

NAMES = ("trajworld", "tdm", "mlp_ensemble")
B, T, CO, CA = 2, 14, 5, 3
REAL_OBS = (5, 3)
REAL_ACT = (3, 2)
REAL_STEPS = (14, 12)


def make_batch(seed=0, t=T, co=CO, ca=CA):
  rng = np.random.default_rng(seed)
  obs_mask = np.arange(co)[None] < np.array(REAL_OBS)[:, None]
  act_mask = np.arange(ca)[None] < np.array(REAL_ACT)[:, None]
  time_mask = np.arange(t)[None] < np.array(REAL_STEPS)[:, None]
  real_obs = obs_mask[:, None, :] & time_mask[:, :, None]
  real_act = act_mask[:, None, :] & time_mask[:, :, None]
  # Smooth-ish trajectories so that the models have something to learn.
  phase = rng.uniform(0, 6, size=(B, 1, co))
  obs = 0.5 + 0.3 * np.sin(0.5 * np.arange(t)[None, :, None] + phase)
  return {
    "obs": np.where(real_obs, obs, 0.0).astype(np.float32),
    "act": np.where(real_act, rng.uniform(size=(B, t, ca)), 0.0).astype(np.float32),
    "obs_mask": obs_mask,
    "act_mask": act_mask,
    "time_mask": time_mask,
    "obs_struct": np.zeros((B, co, 4), np.int32),
    "act_struct": np.zeros((B, ca, 4), np.int32),
    "obs_kind": np.zeros((B, co), np.int32),
    "act_kind": np.zeros((B, ca), np.int32),
    "env_id": np.array([3, 7], np.int32),
  }


def real_region(batch):
  """bool [B, T, Co]: real channels at real steps."""
  return batch["obs_mask"][:, None, :] & batch["time_mask"][:, :, None]


@functools.cache
def setup(name):
  """(model, params, jitted loss, jitted predict), once per model."""
  model = registry.build(name, "tiny")
  params = jax.jit(model.init)(jax.random.key(0), make_batch())
  return model, params, jax.jit(model.loss), jax.jit(model.predict)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
def test_contract_shapes_and_finite(name):
  assert name in registry.names()
  model, params, loss, predict = setup(name)
  batch = make_batch()
  value, metrics = loss(params, batch, jax.random.key(1))
  assert value.shape == () and np.isfinite(float(value))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  pred = predict(params, batch)
  assert pred.shape == (B, T, CO) and pred.dtype == jnp.float32
  assert np.isfinite(np.asarray(pred)).all()
  h = model.history
  np.testing.assert_array_equal(np.asarray(pred)[:, :h], batch["obs"][:, :h])
  assert hash(model.config) == hash(dataclasses.replace(model.config))
  assert type(model.config).from_dict(model.config.to_dict()) == model.config
  assert model.config.replace(history=4).history == 4
  jax.tree.map(lambda s: None, model.param_specs(params))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
def test_no_future_leak_and_causal_in_actions(name):
  model, params, _, predict = setup(name)
  h = model.history
  batch = make_batch()
  ref = np.asarray(predict(params, batch))
  fut = dict(batch, obs=batch["obs"].copy())
  fut["obs"][:, h:] = np.random.default_rng(5).uniform(size=(B, T - h, CO))
  np.testing.assert_array_equal(np.asarray(predict(params, fut)), ref)

  t_act = h + 2  # an action of the horizon moves only the states after it
  act = batch["act"].copy()
  act[:, t_act] = np.where(batch["act_mask"], 1.0 - act[:, t_act], 0.0)
  out = np.asarray(predict(params, dict(batch, act=act)))
  np.testing.assert_array_equal(out[:, : t_act + 1], ref[:, : t_act + 1])
  assert np.abs(out - ref)[:, t_act + 1][batch["obs_mask"]].max() > 1e-6


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
def test_padding_changes_nothing(name):
  """Garbage at padded channels (existing and 2 obs + 1 action channels appended, mask
  False) and at padded steps: same loss, same predictions of real channels/steps."""
  model, params, loss, predict = setup(name)
  batch = make_batch()
  rng = np.random.default_rng(7)
  ref_pred = np.asarray(predict(params, batch))
  ref_loss = float(loss(params, batch, jax.random.key(1))[0])

  garbage = lambda shape: rng.uniform(size=shape).astype(np.float32)
  pad = dict(batch)
  pad["obs"] = np.concatenate(
    [np.where(batch["obs_mask"][:, None], batch["obs"], garbage((B, T, CO))), garbage((B, T, 2))], axis=2
  )
  pad["act"] = np.concatenate(
    [np.where(batch["act_mask"][:, None], batch["act"], garbage((B, T, CA))), garbage((B, T, 1))], axis=2
  )
  pad["obs"] = np.where(batch["time_mask"][:, :, None], pad["obs"], garbage((B, T, CO + 2)))
  pad["act"] = np.where(batch["time_mask"][:, :, None], pad["act"], garbage((B, T, CA + 1)))
  pad["obs_mask"] = np.pad(batch["obs_mask"], ((0, 0), (0, 2)))
  pad["act_mask"] = np.pad(batch["act_mask"], ((0, 0), (0, 1)))
  for k, n in (("obs_struct", 2), ("act_struct", 1)):
    pad[k] = np.pad(batch[k], ((0, 0), (0, n), (0, 0)))
  for k, n in (("obs_kind", 2), ("act_kind", 1)):
    pad[k] = np.pad(batch[k], ((0, 0), (0, n)))

  pred = np.asarray(predict(params, pad))[:, :, :CO]
  real = real_region(batch)
  assert np.abs(pred - ref_pred)[real].max() < 1e-5
  assert float(loss(params, pad, jax.random.key(1))[0]) == pytest.approx(ref_loss, abs=1e-5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
def test_a_few_adam_steps_lower_the_loss(name):
  model, params, loss, _ = setup(name)
  batch = make_batch()
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, rng):
    grads, _ = jax.grad(loss, has_aux=True)(params, batch, rng)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  key = jax.random.key(3)
  before = float(loss(params, batch, key)[1]["nll"])
  opt_state = opt.init(params)
  for i in range(40):
    params, opt_state = step(params, opt_state, jax.random.fold_in(key, i))
  after = float(loss(params, batch, key)[1]["nll"])
  print(f"{name}: nll {before:.3f} -> {after:.3f}")
  assert after < before - 0.5, (before, after)


def _naive_rollout(net_cls, model, params, batch, per_channel):
  """Re-run the full (teacher-forced) network on the growing sequence for every new
  prediction: step by step (TrajWorld) or obs token by obs token (TDM)."""
  net = net_cls(model.config)
  fwd = jax.jit(lambda p, b: net.apply({"params": p}, prepare_batch(b, model.config)))
  obs = batch["obs"].copy()
  for s in range(model.history, T):
    for c in range(CO) if per_channel else [slice(None)]:
      logits = fwd(params, dict(batch, obs=obs))  # logits[:, s - 1] predicts obs[:, s]
      obs[:, s, c] = np.asarray(expectation(logits[:, s - 1, c]))
  return obs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name,net_cls,per_channel", [("trajworld", TrajWorldNet, False), ("tdm", TDMNet, True)])
def test_cached_rollout_equals_naive_recomputation(name, net_cls, per_channel):
  model, params, _, predict = setup(name)
  batch = make_batch()
  cached = np.asarray(predict(params, batch))
  naive = _naive_rollout(net_cls, model, params, batch, per_channel)
  real = real_region(batch)
  assert np.abs(cached - naive)[real].max() < 1e-5


@pytest.mark.timeout(120)
def test_mlp_ensemble_elites():
  """Members made bad are never elites; predict is the Markov rollout with the mean of the
  elites' mean deltas; a non-elite member's weights do not matter."""
  model, params, _, predict = setup("mlp_ensemble")
  cfg, h = model.config, model.history
  batch = make_batch()
  bad = (0, 3)
  members = dict(params["members"])
  out = dict(members["out"])
  out["bias"] = out["bias"].at[bad, : cfg.max_obs_channels].add(0.3)  # mean delta off by 0.3
  members["out"] = out
  params = {"members": members}

  idx_be, err_mb = elites(model, params, batch)
  idx_be, err_mb = np.asarray(idx_be), np.asarray(err_mb)
  assert idx_be.shape == (B, cfg.n_elites)
  for b in range(B):
    assert not set(bad) & set(idx_be[b].tolist())
    best = np.argsort(err_mb[:, b], kind="stable")[: cfg.n_elites]
    assert set(idx_be[b].tolist()) == set(best.tolist())

  pred = np.asarray(predict(params, batch))
  # Reference rollout: all members' means, the elites averaged per window in numpy.
  apply = jax.jit(lambda p, x: _Ensemble(cfg).apply({"params": p}, x)[0])
  pb = prepare_batch(batch, cfg)
  state = np.where(batch["obs_mask"], batch["obs"][:, h - 1], 0.0)
  for t in range(h - 1, T - 1):
    mean = np.asarray(apply(params, features(state, pb["act"][:, t], pb["obs_mask"], pb["act_mask"], cfg)))
    delta = np.stack([mean[idx_be[b], b].mean(0) for b in range(B)])[:, :CO]
    state = np.where(batch["obs_mask"], np.clip(state + delta, 0, 1), 0.0)
    np.testing.assert_allclose(pred[:, t + 1][batch["obs_mask"]], state[batch["obs_mask"]], atol=1e-5)

  hidden_0 = dict(members["hidden_0"], kernel=members["hidden_0"]["kernel"].at[0].mul(3.0))
  worse = {"members": dict(members, hidden_0=hidden_0)}  # member 0 is no elite
  np.testing.assert_array_equal(np.asarray(predict(worse, batch)), pred)


@pytest.mark.timeout(120)
def test_base_parameter_counts():
  """Abstract init (jax.eval_shape) at the base sizes: no memory, no FLOPs."""
  counts = {}
  for name in NAMES:
    model = registry.build(name, "base")
    batch = make_batch(t=model.history + 1)
    shapes = jax.eval_shape(model.init, jax.random.key(0), batch)
    counts[name] = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert model.config.history == 50 and model.config.max_window_len == 150
  print("base parameter counts:", counts)
  assert 13e6 < counts["trajworld"] < 16e6
  assert 13e6 < counts["tdm"] < 16e6
  assert 1.5e6 < counts["mlp_ensemble"] < 2e6  # MBPO's 4 x 200 members
