"""World-model MPPI beyond the model's window (control/backends.py, `segment`): the horizon predicted
in chained windows, each conditioned on the last `history` steps of the one before.

A stub model with second-order dynamics in normalised units (x_t from x_{t-1}, x_{t-2}, a_{t-1}, a_{t-2}) is
Markov in its last two steps, so chaining windows of any length must give the one-window prediction;
a wrong history carry (the observations or the actions shifted by one) would not.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from westworld_jax.control import backends, tasks
from westworld_jax.data import normalise
from westworld_jax.model.world_model import CapacityError, WorldModel

H, HP = 3, 10


def _stub(max_window_len):
  class Cfg:
    history = H

  Cfg.max_window_len = max_window_len

  def predict(params, batch):
    obs, act = batch["obs"], batch["act"]
    assert obs.shape[1] <= max_window_len, obs.shape  # trace time: the window the model sees
    xs = [obs[:, t] for t in range(H)]
    for t in range(H, obs.shape[1]):
      drive = 0.1 * (act[:, t - 1, :1] - 0.5) + 0.05 * (act[:, t - 2, 1:2] - 0.5)
      xs.append(0.6 * xs[-1] + 0.3 * xs[-2] + 0.05 + drive)
    return jnp.stack(xs, axis=1)

  return WorldModel("stub", Cfg(), None, None, predict, None)


@pytest.mark.timeout(300)
def test_chained_windows_equal_one_window_and_respect_the_models_window():
  task = tasks.make_task("hopper")
  stats = {"obs_min": [-1.0] * 11, "obs_max": [1.0] * 11, "act_min": [-1.0] * 3, "act_max": [1.0] * 3}
  norm = normalise.Normaliser.from_stats(stats, 11, 3)
  rng = np.random.default_rng(0)
  ctx = backends.WMContext(
    robot=jnp.int32(0),
    obs_hist=jnp.asarray(rng.uniform(-0.4, 0.4, (H, 11)), jnp.float32),
    act_hist=jnp.asarray(rng.uniform(-1, 1, (H - 1, 3)), jnp.float32),
    goal=jnp.zeros(()),
  )
  u = jnp.asarray(rng.uniform(-1, 1, (5, HP, 3)), jnp.float32)

  whole = backends.WorldModelBackend(_stub(H + HP), None, [task], [norm], horizon=HP)
  want = np.asarray(jax.jit(whole.predict)(ctx, u))
  assert want.shape == (5, HP, 11) and np.ptp(want[:, :, 0]) > 0.05  # the actions move the prediction
  for seg in (1, 4, 5):  # windows of 1; 4 + 4 + 2 (a scan and the rest); 5 + 5
    chained = backends.WorldModelBackend(_stub(H + seg), None, [task], [norm], horizon=HP, segment=seg)
    got = np.asarray(jax.jit(chained.predict)(ctx, u))
    np.testing.assert_allclose(got, want, atol=2e-6, err_msg=f"segment {seg}")
  chunked = backends.WorldModelBackend(_stub(H + 4), None, [task], [norm], horizon=HP, segment=4, sample_chunk=1)
  np.testing.assert_allclose(np.asarray(jax.jit(chunked.predict)(ctx, u)), want, atol=2e-6)
  # without segments the horizon does not fit the model's window: one error that says what to do
  with pytest.raises(CapacityError, match="wm_segment"):
    backends.WorldModelBackend(_stub(H + 4), None, [task], [norm], horizon=HP)
  with pytest.raises(ValueError, match="segment must be >= 0"):
    backends.WorldModelBackend(_stub(H + 4), None, [task], [norm], horizon=HP, segment=-1)
