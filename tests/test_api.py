"""The public API (westworld_jax/api.py): `load` and `Model.predict` in the robot's own units.

`predict` must be the computation control plans with (control/backends.WorldModelBackend): the
same window, normalisation and batch for the same history and actions. Bad input gets one
UserError that says what to do.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import westworld_jax as ww
from westworld_jax import api
from westworld_jax.control import backends, tasks
from westworld_jax.data import normalise
from westworld_jax.errors import UserError
from westworld_jax.model import registry
from westworld_jax.model.batch import zeros_batch

H, F = 4, 6


@pytest.fixture(scope="module")
def model_and_task():
  task = tasks.make_task("hopper")
  wm = registry.build("westworld", "tiny", n_layers=1, history=H)
  params = jax.jit(wm.init)(jax.random.key(0), zeros_batch(1, H + F, task.num_obs, task.num_act))
  rng = np.random.default_rng(0)
  obs_all = rng.normal(size=(200, task.num_obs)).astype(np.float32)
  act_all = rng.uniform(-1, 1, size=(200, task.num_act)).astype(np.float32)
  stats = {"hopper-mine": {"robot": "hopper", "stats": normalise.stats_of(obs_all, act_all)}}
  return api.Model(wm, params, stats), task, (obs_all, act_all)


def _inputs(task, lead=(3,), seed=1):
  rng = np.random.default_rng(seed)
  obs = rng.normal(size=lead + (H + 2, task.num_obs)).astype(np.float32) * 0.5
  act = rng.uniform(-1, 1, size=lead + (H + 2, task.num_act)).astype(np.float32)
  fut = rng.uniform(-1, 1, size=lead + (F, task.num_act)).astype(np.float32)
  return obs, act, fut


@pytest.mark.timeout(300)
def test_predict_is_what_world_model_mpc_plans_with(model_and_task):
  model, task, _ = model_and_task
  obs, act, fut = _inputs(task)
  got = model.predict("hopper", obs, act, fut)
  assert got.shape == (3, F, task.num_obs) and np.isfinite(got).all()
  norm = model.normaliser(task.robot)
  backend = backends.WorldModelBackend(model.world_model, model.params, [task], [norm], horizon=F)
  for i in range(3):
    # the backend's history: H observations and the H-1 actions between them; its plan starts with
    # the action taken at the current observation
    ctx = backends.WMContext(jnp.int32(0), jnp.asarray(obs[i, -H:]), jnp.asarray(act[i, -H:-1]), jnp.zeros(()))
    plan = np.concatenate([act[i, -1:], fut[i, :-1]])[None]
    want = np.asarray(backend.predict(ctx, jnp.asarray(plan)))[0]
    np.testing.assert_allclose(got[i], want, atol=1e-5)


@pytest.mark.timeout(300)
def test_batch_axes_history_and_normalisation_sources(model_and_task):
  model, task, data = model_and_task
  obs, act, fut = _inputs(task, lead=(2, 3))
  got = model.predict(task.robot, obs, act, fut)
  flat = model.predict("hopper", obs.reshape(6, *obs.shape[2:]), act.reshape(6, *act.shape[2:]), fut.reshape(6, F, -1))
  np.testing.assert_allclose(got.reshape(flat.shape), flat, atol=1e-6)
  # only the last `history` steps count
  np.testing.assert_allclose(model.predict("hopper", obs[..., -H:, :], act[..., -H:, :], fut), got, atol=1e-6)
  # the checkpoint's stats for a robot it trained on == the same stats passed as data
  np.testing.assert_allclose(model.predict("hopper", obs, act, fut, data=data), got, atol=1e-6)
  other = (data[0] * 3.0, data[1])
  assert np.abs(model.predict("hopper", obs, act, fut, data=other) - got).max() > 1e-3


@pytest.mark.timeout(300)
def test_bad_input_is_one_user_error(model_and_task):
  model, task, _ = model_and_task
  obs, act, fut = _inputs(task)
  cases = [
    ((obs[..., :5], act, fut), "11 observation and 3 action channels"),
    ((obs, act, fut[..., :2]), "11 observation and 3 action channels"),
    ((obs[:, -2:], act[:, -2:], fut), f"conditions on {H} past steps"),
    ((obs, act[:2], fut), "same leading"),
    ((np.where(obs > 1.0, np.nan, obs), act, fut), "obs holds NaN"),
    ((obs, act, np.zeros((3, 64, 3), np.float32)), "max_window_len"),
  ]
  for args, match in cases:
    with pytest.raises(UserError, match=match):
      model.predict("hopper", *args)
  with pytest.raises(UserError, match="no robot 'no_such_robot'"):
    model.predict("no_such_robot", obs, act, fut)
  with pytest.raises(UserError, match="NaN or inf"):
    model.predict("hopper", obs, act, fut, data=(np.full((4, 11), np.inf), np.zeros((4, 3))))
  with pytest.raises(UserError, match="no model 'nope'"):
    ww.load("nope")
