"""HL-Gauss tokenizer: histograms are distributions, read back to the value, bins are right."""

import jax.numpy as jnp
import numpy as np
import pytest

from westworld_jax.model.tokenizer import (
  bin_centers,
  expectation,
  expectation_from_probs,
  hl_gauss_histogram,
  target_bins,
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_bins", [32, 256])
def test_histogram_round_trip(num_bins):
  v = jnp.linspace(0.0, 1.0, 1001)
  hist = hl_gauss_histogram(v, num_bins)
  assert hist.shape == (1001, num_bins) and hist.dtype == jnp.float32
  assert float(hist.min()) >= 0.0
  np.testing.assert_allclose(hist.sum(-1), 1.0, atol=1e-5)
  err = np.abs(np.asarray(expectation_from_probs(hist) - v))
  inner = np.asarray((v > 2 / num_bins) & (v < 1 - 2 / num_bins))
  # Inside, the read-out is unbiased to a tiny fraction of a bin; at the edges the
  # truncated Gaussian pulls it inwards by less than one bin.
  assert err[inner].max() < 0.02 / num_bins
  assert err.max() < 0.75 / num_bins
  # Logits = log-histogram read out the same way (softmax inverts log).
  np.testing.assert_allclose(expectation(jnp.log(hist + 1e-30)), expectation_from_probs(hist), atol=1e-5)


@pytest.mark.timeout(60)
def test_histogram_width_and_mask():
  k = 32
  hist = hl_gauss_histogram(jnp.array([0.5 + 0.5 / k]), k)[0]  # centred on bin 16
  assert int(jnp.argmax(hist)) == 16
  # sigma = 0.75 bins: the centre bin holds erf(0.5 / (0.75 sqrt 2)) ~ 0.495 of the mass.
  np.testing.assert_allclose(hist[16], 0.4950, atol=1e-3)
  np.testing.assert_allclose(hist[15], hist[17], atol=1e-6)
  masked = hl_gauss_histogram(jnp.array([[0.3, 0.7]]), k, mask=jnp.array([[True, False]]))
  assert float(masked[0, 0].sum()) == pytest.approx(1.0, abs=1e-5)
  assert float(jnp.abs(masked[0, 1]).sum()) == 0.0
  # Out-of-range values are clipped, not extrapolated.
  np.testing.assert_array_equal(
    hl_gauss_histogram(jnp.array([-0.2, 1.3]), k), hl_gauss_histogram(jnp.array([0.0, 1.0]), k)
  )


@pytest.mark.timeout(60)
def test_target_bins():
  k = 32
  v = jnp.array([0.0, 1.0 / k - 1e-6, 1.0 / k, 0.5, 1.0 - 1e-6, 1.0, -0.1, 1.1])
  np.testing.assert_array_equal(target_bins(v, k), [0, 0, 1, 16, 31, 31, 0, 31])
  assert target_bins(v, k).dtype == jnp.int32
  centres = bin_centers(k)
  np.testing.assert_array_equal(target_bins(centres, k), np.arange(k))
  # The histogram's mode is the target bin for values at bin centres.
  np.testing.assert_array_equal(jnp.argmax(hl_gauss_histogram(centres, k), -1), np.arange(k))


def test_hl_gauss_target_has_no_quantisation_floor_and_bin_target_does():
  """The loss's optimum read-out: with one-hot bin targets the centre of the value's bin (a mean error of
  1/(4K)); with HL-Gauss targets the value itself (interior values). The hl_gauss loss is minimal there."""
  import jax  # pylint: disable=import-outside-toplevel

  from westworld_jax.model.loss import next_step_loss  # pylint: disable=import-outside-toplevel

  k = 32
  v = np.random.default_rng(0).uniform(0.1, 0.9, (4, 3, 5)).astype(np.float32)  # [B, T, Co]
  batch = {"obs": jnp.asarray(v), "obs_mask": jnp.ones((4, 5), bool), "time_mask": jnp.ones((4, 3), bool)}
  one_hot = jnp.log(jax.nn.one_hot(target_bins(jnp.asarray(v), k), k) + 1e-30)
  err_bin = np.abs(np.asarray(expectation(one_hot)) - v)
  assert abs(err_bin.mean() - 1 / (4 * k)) < 0.25 / (4 * k)
  soft = jnp.log(hl_gauss_histogram(jnp.asarray(v), k) + 1e-30)
  assert np.abs(np.asarray(expectation(soft)) - v).max() < 1e-4
  logits = jnp.concatenate([soft[:, 1:], soft[:, :1]], axis=1)  # logits[:, t] predicts obs[:, t + 1]
  grad = jax.grad(lambda lg: next_step_loss(lg, batch, first_target_step=1, target="hl_gauss"))(logits)
  assert float(jnp.abs(grad[:, :-1]).max()) < 1e-6  # cross-entropy to a distribution: minimal at it
  with pytest.raises(ValueError, match="target='nope'"):
    next_step_loss(logits, batch, first_target_step=1, target="nope")
