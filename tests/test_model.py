"""WestWorld network: shapes, padding/future invariance, causality, loss masking, size."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from westworld_jax.model import (
  WestWorld,
  check_batch,
  expectation,
  get_model_config,
  next_step_loss,
  param_count,
  pooled_errors,
  target_mask,
)

CFG = get_model_config("tiny")
H = CFG.history  # 8
B, T, CO, CA = 2, 16, 5, 3
REAL_OBS = (5, 3)  # real observation channels per sample
REAL_ACT = (3, 2)
REAL_STEPS = (16, 13)


def make_batch(seed=0):
  rng = np.random.default_rng(seed)
  obs_mask = np.arange(CO)[None] < np.array(REAL_OBS)[:, None]
  act_mask = np.arange(CA)[None] < np.array(REAL_ACT)[:, None]
  time_mask = np.arange(T)[None] < np.array(REAL_STEPS)[:, None]
  real_obs = obs_mask[:, None, :] & time_mask[:, :, None]
  real_act = act_mask[:, None, :] & time_mask[:, :, None]
  return {
    "obs": np.where(real_obs, rng.uniform(size=(B, T, CO)), 0.0).astype(np.float32),
    "act": np.where(real_act, rng.uniform(size=(B, T, CA)), 0.0).astype(np.float32),
    "obs_mask": obs_mask,
    "act_mask": act_mask,
    "time_mask": time_mask,
    "obs_struct": np.where(obs_mask[..., None], rng.integers(0, 8, (B, CO, 4)), 0).astype(np.int32),
    "act_struct": np.where(act_mask[..., None], rng.integers(0, 8, (B, CA, 4)), 0).astype(np.int32),
    "obs_kind": np.where(obs_mask, rng.integers(0, 16, (B, CO)), 0).astype(np.int32),
    "act_kind": np.where(act_mask, rng.integers(0, 16, (B, CA)), 0).astype(np.int32),
    "env_id": np.array([3, 7], np.int32),
  }


@pytest.fixture(scope="module")
def params():
  return jax.jit(WestWorld(CFG).init)(jax.random.key(0), make_batch())["params"]


_APPLY = {}


def apply(params, batch, cfg=CFG):
  """Jitted forward, one compile per config (configs are hashable)."""
  if cfg not in _APPLY:
    model = WestWorld(cfg)
    _APPLY[cfg] = jax.jit(lambda p, b: model.apply({"params": p}, b))
  return _APPLY[cfg](params, batch)


def predicted_real(batch):
  """bool [B, T, Co]: logits of real channels at predicted positions with a real target."""
  m = np.zeros((B, T, CO), bool)
  m[:, :-1] = np.asarray(target_mask(batch, H))
  return m


def max_diff(a, b, where=None):
  d = np.abs(np.asarray(a["logits"]) - np.asarray(b["logits"])).max(-1)
  return float(d[where].max() if where is not None else d.max())


@pytest.mark.timeout(60)
def test_forward_shapes(params):
  out = apply(params, make_batch())
  assert out["logits"].shape == (B, T, CO, CFG.num_bins)
  assert out["logits"].dtype == jnp.float32
  assert np.isfinite(np.asarray(out["logits"])).all()
  assert out["aux_loss"].shape == () and float(out["aux_loss"]) == 0.0  # dense: no aux loss


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
  "system_embedding,value_input,readout_prior",
  [
    ("cls", "histogram", "none"),
    ("robot", "histogram", "none"),
    ("cls", "histogram_linear", "none"),
    ("cls", "histogram", "last_value"),
  ],
)
def test_padding_and_future_do_not_change_predictions(params, system_embedding, value_input, readout_prior):
  cfg = dataclasses.replace(
    CFG, system_embedding=system_embedding, value_input=value_input, readout_prior=readout_prior
  )
  batch = make_batch()
  if (value_input, readout_prior) != (CFG.value_input, CFG.readout_prior):  # parameters of their own
    params = jax.jit(WestWorld(cfg).init)(jax.random.key(0), batch)["params"]
  ref = apply(params, batch, cfg)
  rng = np.random.default_rng(1)
  obs_mask, act_mask, time_mask = batch["obs_mask"], batch["act_mask"], batch["time_mask"]

  # Padded observation and action channels: values, kinds and structure indices.
  pad = dict(batch)
  pad["obs"] = np.where(obs_mask[:, None, :], batch["obs"], rng.uniform(size=(B, T, CO)))
  pad["act"] = np.where(act_mask[:, None, :], batch["act"], rng.uniform(size=(B, T, CA)))
  pad["obs_kind"] = np.where(obs_mask, batch["obs_kind"], 5).astype(np.int32)
  pad["act_struct"] = np.where(act_mask[..., None], batch["act_struct"], 3).astype(np.int32)
  out = apply(params, pad, cfg)
  real_chan = np.broadcast_to(obs_mask[:, None, :], (B, T, CO))
  assert max_diff(out, ref, real_chan) < 1e-6

  # Padded time steps (sample 1 ends at step 13): observations and actions there.
  pad = dict(batch)
  pad["obs"] = np.where(time_mask[:, :, None], batch["obs"], rng.uniform(size=(B, T, CO)))
  pad["act"] = np.where(time_mask[:, :, None], batch["act"], rng.uniform(size=(B, T, CA)))
  out = apply(params, pad, cfg)
  assert max_diff(out, ref, predicted_real(batch)) < 1e-6

  # Future observations (t >= H) are never read: every logit is unchanged.
  fut = dict(batch)
  fut["obs"] = batch["obs"].copy()
  fut["obs"][:, H:] = rng.uniform(size=(B, T - H, CO))
  assert max_diff(apply(params, fut, cfg), ref) == 0.0


@pytest.mark.timeout(60)
def test_causal_over_time(params):
  """system_embedding='token': every position sees only steps <= its own."""
  cfg = dataclasses.replace(CFG, system_embedding="token")
  batch = make_batch()
  ref = apply(params, batch, cfg)
  t0 = 4  # a history step
  obs = batch["obs"].copy()
  obs[:, t0] = np.where(batch["obs_mask"], 1.0 - obs[:, t0], 0.0)
  out = apply(params, {**batch, "obs": obs}, cfg)
  assert max_diff(out, ref, np.s_[:, :t0]) == 0.0
  assert max_diff(out, ref, np.s_[:, t0:]) > 1e-4  # and the change does propagate

  for t_act in (3, 11):  # a history and a horizon step
    act = batch["act"].copy()
    act[:, t_act] = np.where(batch["act_mask"], 1.0 - act[:, t_act], 0.0)
    out = apply(params, {**batch, "act": act}, cfg)
    assert max_diff(out, ref, np.s_[:, :t_act]) == 0.0
    assert max_diff(out, ref, np.s_[:, t_act]) > 1e-4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("system_embedding", ["cls", "token"])
def test_last_history_step_reaches_first_prediction(params, system_embedding):
  """logits[:, H - 1] predict obs[:, H] (the first horizon step) and must read obs[:, H - 1];
  guards against an off-by-one in the query or CLS placement."""
  cfg = dataclasses.replace(CFG, system_embedding=system_embedding)
  batch = make_batch()
  obs = batch["obs"].copy()
  obs[:, H - 1] = np.where(batch["obs_mask"], 1.0 - obs[:, H - 1], 0.0)
  out, ref = apply(params, {**batch, "obs": obs}, cfg), apply(params, batch, cfg)
  assert max_diff(out, ref, np.s_[:, H - 1]) > 1e-3
  assert max_diff(out, ref, np.s_[:, H]) > 1e-4
  if system_embedding == "token":
    assert max_diff(out, ref, np.s_[:, : H - 1]) == 0.0


@pytest.mark.timeout(60)
def test_cls_gate_sees_history_only(params):
  """Default CLS after the history: horizon predictions are causal in actions; with
  cls_position='end' (upstream) a future action moves earlier predictions via the gate."""
  batch = make_batch()
  t_act = 11
  act = batch["act"].copy()
  act[:, t_act] = np.where(batch["act_mask"], 1.0 - act[:, t_act], 0.0)
  out, ref = apply(params, {**batch, "act": act}), apply(params, batch)
  assert max_diff(out, ref, np.s_[:, :t_act]) == 0.0
  assert max_diff(out, ref, np.s_[:, t_act]) > 1e-4

  end = dataclasses.replace(CFG, cls_position="end")
  out, ref = apply(params, {**batch, "act": act}, end), apply(params, batch, end)
  assert max_diff(out, ref, np.s_[:, :t_act]) > 0.0


@pytest.mark.timeout(60)
def test_loss_ignores_padding(params):
  batch = make_batch()
  logits = apply(params, batch)["logits"]
  rng = np.random.default_rng(2)
  valid = np.zeros((B, T, CO), bool)
  valid[:, 1:] = np.asarray(target_mask(batch, H))
  noisy_obs = np.where(valid, batch["obs"], rng.uniform(size=(B, T, CO))).astype(np.float32)
  noisy_logits = np.where(np.roll(valid, -1, axis=1)[..., None], logits, rng.normal(size=logits.shape) * 10).astype(
    np.float32
  )
  noisy = {**batch, "obs": noisy_obs}
  for weighting in ("token", "env"):
    loss = next_step_loss(logits, batch, first_target_step=H, weighting=weighting)
    loss2 = next_step_loss(noisy_logits, noisy, first_target_step=H, weighting=weighting)
    assert np.isfinite(float(loss)) and float(loss) == pytest.approx(float(loss2), abs=1e-6)
  pred = lambda lg, b: np.concatenate([b["obs"][:, :1], expectation(lg[:, :-1])], axis=1)  # logits[:, t] -> obs t+1
  m, m2 = (pooled_errors(pred(lg, b), b, H) for lg, b in ((logits, batch), (noisy_logits, noisy)))
  assert float(m["count"]) == valid.sum()
  for k in ("mae", "mse"):
    assert float(m[k]) == pytest.approx(float(m2[k]), abs=1e-6)


@pytest.mark.timeout(60)
def test_loss_weighting():
  """'token' pools all real tokens; 'env' averages per-environment means."""
  k = 4
  batch = {
    "obs": np.full((3, 3, 2), 0.1, np.float32),
    "obs_mask": np.ones((3, 2), bool),
    "time_mask": np.ones((3, 3), bool),
    "env_id": np.array([0, 0, 1], np.int32),
  }
  batch["obs_mask"][2, 1] = False  # env 1 has half the real tokens
  logits = np.zeros((3, 3, 2, k), np.float32)
  logits[2, ..., 0] = 5.0  # env 1 predicts its target bin well -> lower loss
  per_tok = np.array([np.log(k), -jax.nn.log_softmax(jnp.array([5.0, 0, 0, 0]))[0]])
  tok = next_step_loss(logits, batch, first_target_step=1, weighting="token")
  env = next_step_loss(logits, batch, first_target_step=1, weighting="env")
  n0, n1 = 2 * 2 * 2, 2 * 1  # real target tokens of env 0 and env 1
  assert float(tok) == pytest.approx((n0 * per_tok[0] + n1 * per_tok[1]) / (n0 + n1), rel=1e-5)
  assert float(env) == pytest.approx(per_tok.mean(), rel=1e-5)


@pytest.mark.timeout(60)
def test_check_batch_says_what_to_change():
  batch = make_batch()
  with pytest.raises(ValueError, match="max_obs_channels"):
    check_batch(batch, dataclasses.replace(CFG, max_obs_channels=4))
  with pytest.raises(ValueError, match="obs_mask"):
    check_batch({**batch, "obs_mask": batch["obs_mask"][:, :4]}, CFG)


@pytest.mark.timeout(60)
def test_sizes():
  n = param_count(get_model_config("base"))  # abstract: jax.eval_shape, no memory
  assert abs(n / 14.6e6 - 1) < 0.02, n  # the paper's 14.6M (14.38M here)
  large = get_model_config("large")
  assert large.num_experts >= 16 and large.moe_mode == "topk"
  assert param_count(large) >= 100e6


@pytest.mark.timeout(60)
def test_default_loss_counts_history_targets():
  """The default objective (first_target_step=1, as upstream) scores every next-step target,
  so a history target changes the loss; first_target_step=history scores the horizon only."""
  assert CFG.first_target_step == 1
  batch = make_batch()
  logits = np.random.default_rng(3).normal(size=(B, T, CO, CFG.num_bins)).astype(np.float32)
  changed = {**batch, "obs": batch["obs"].copy()}
  changed["obs"][:, 3] = np.where(batch["obs_mask"], 1.0 - batch["obs"][:, 3], 0.0)  # t < H
  every = [float(next_step_loss(logits, b, first_target_step=1)) for b in (batch, changed)]
  horizon = [float(next_step_loss(logits, b, first_target_step=H)) for b in (batch, changed)]
  assert abs(every[0] - every[1]) > 1e-3
  assert horizon[0] == horizon[1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("first_target_step", [1, H])
def test_registry_loss_uses_first_target_step(first_target_step):
  """The training loss is next_step_loss at config.first_target_step (+ the MoE aux loss)."""
  from westworld_jax.model import registry

  model = registry.build("westworld", "tiny", dropout_rate=0.0, first_target_step=first_target_step)
  batch = make_batch()
  params = model.init(jax.random.key(1), batch)
  loss, metrics = jax.jit(model.loss)(params, batch, jax.random.key(2))
  logits = apply(params, batch, model.config)["logits"]
  want = next_step_loss(logits, batch, first_target_step=first_target_step)
  assert float(metrics["nll"]) == pytest.approx(float(want), rel=1e-5)
  assert float(loss) == pytest.approx(float(want + metrics["aux_loss"]), rel=1e-5)
  with pytest.raises(ValueError, match="first_target_step"):
    get_model_config("tiny", first_target_step=H + 1)


@pytest.mark.timeout(120)
def test_cls_passes_from_block_to_block():
  """cls_from_previous_block (upstream): block 0 owns the only learned CLS and its CLS output
  feeds block 1; with a fresh CLS per block, block 0's CLS output reaches nothing."""
  batch = make_batch()
  for chained in (True, False):
    cfg = dataclasses.replace(CFG, cls_from_previous_block=chained)
    p = WestWorld(cfg).init(jax.random.key(0), batch)["params"]
    assert "cls" in p["block_0"] and ("cls" in p["block_1"]) == (not chained)
    bumped = jax.tree.map(lambda x: x, p)
    # A non-uniform change (a uniform one would be undone by block 1's LayerNorm).
    noise = np.random.default_rng(4).normal(size=(CFG.d_model,)).astype(np.float32)
    bumped["block_0"]["ln_cls"] = {k: v + noise for k, v in p["block_0"]["ln_cls"].items()}
    d = max_diff(apply(bumped, batch, cfg), apply(p, batch, cfg), np.s_[:, H:])
    assert (d > 1e-4) if chained else (d == 0.0)


@pytest.mark.timeout(120)
def test_block_norm_layouts():
  """'upstream': LN before the SSM, LN on the CLS for the gate and the next block, none
  between SSM and MoE; 'post': LN after each residual. Both keep horizon causality."""
  batch = make_batch()
  names = {"upstream": {"ln_ssm_in", "ln_gate", "ln_cls", "ln_moe"}, "post": {"ln_ssm", "ln_moe"}}
  for layout, lns in names.items():
    cfg = dataclasses.replace(CFG, block_norms=layout)
    p = WestWorld(cfg).init(jax.random.key(0), batch)["params"]
    got = {k for k in p["block_1"] if k.startswith("ln_") and k not in ("ln_self", "ln_cross", "ln_ffn")}
    assert got == lns, (layout, got)
    fut = {**batch, "obs": batch["obs"].copy()}
    fut["obs"][:, H:] = 0.5
    assert max_diff(apply(p, fut, cfg), apply(p, batch, cfg)) == 0.0
  with pytest.raises(ValueError, match="block_norms"):
    get_model_config("tiny", block_norms="pre")


@pytest.mark.timeout(120)
def test_dropout_and_embedding_init():
  """Dropout acts in training only; embedding tables start N(0, 1) (upstream), the query 0.02."""
  from westworld_jax.model import registry

  model = registry.build("westworld", "tiny")
  assert model.config.dropout_rate == 0.1
  batch = make_batch()
  params = model.init(jax.random.key(1), batch)
  loss = jax.jit(model.loss)
  a, b = (float(loss(params, batch, jax.random.key(s))[0]) for s in (0, 1))
  assert a != b  # dropout draws differ
  pred = jax.jit(model.predict)
  np.testing.assert_array_equal(pred(params, batch), pred(params, batch))
  emb = params["embed"]
  assert 0.8 < float(np.std(emb["time"]["embedding"])) < 1.2
  assert 0.8 < float(np.std(emb["structure"]["pre_order"]["embedding"])) < 1.2
  assert 0.01 < float(np.std(emb["query"])) < 0.04


@pytest.mark.timeout(60)
def test_structural_embedding_ablation(params):
  """structural_embedding=False: the structure indices reach no prediction (and no parameter holds them);
  with the default they do."""
  batch = make_batch()
  moved = {**batch, "obs_struct": (batch["obs_struct"] + 1) % 8, "act_struct": (batch["act_struct"] + 2) % 8}
  assert max_diff(apply(params, moved), apply(params, batch)) > 1e-4
  cfg = dataclasses.replace(CFG, structural_embedding=False)
  p = jax.jit(WestWorld(cfg).init)(jax.random.key(0), batch)["params"]
  assert "structure" not in p["embed"]
  assert max_diff(apply(p, moved, cfg), apply(p, batch, cfg)) == 0.0


@pytest.mark.timeout(60)
def test_last_value_prior_reads_out_persistence():
  """readout_prior='last_value' with the head at zero predicts each position's last seen value to sub-bin
  precision: the observation itself at history steps, the last history value over the horizon."""
  cfg = dataclasses.replace(CFG, readout_prior="last_value")
  batch = make_batch()
  p = jax.jit(WestWorld(cfg).init)(jax.random.key(0), batch)["params"]
  p = {**p, "head": jax.tree.map(jnp.zeros_like, p["head"])}
  pred = np.asarray(expectation(apply(p, batch, cfg)["logits"]))  # [B, T, Co]: pred[:, t] ~ obs[:, t + 1]
  obs = batch["obs"]
  last = np.concatenate([obs[:, :H], np.repeat(obs[:, H - 1 : H], T - H, axis=1)], axis=1)
  interior = (last > 0.1) & (last < 0.9)  # the histogram is renormalised on [0, 1]: edges pull inward
  np.testing.assert_allclose(pred[interior], last[interior], atol=2e-3)
  # 2e-3 is far below a bin (1/32): the head has only a change to learn
