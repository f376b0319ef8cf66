"""Benchmark: where a WestWorld training step's time goes, one component at a time.

  python benchmarks/components.py                         # CPU: the tiny model
  python benchmarks/components.py --size base --batch 14  # a GPU: the authors' training shapes

Each component of a block (channel self-attention, cross-attention to actions, FFN, the Mamba
SSM layer with its projections, conv and scan, Sys-MoE, the LayerNorms) and the parts outside the
blocks (token embedding, head + loss) is jitted ALONE as forward + backward (gradients of its
params and inputs against a fixed random cotangent) on the shapes it sees inside the model, and
timed (median). Block components count n_layers times. The last rows compare the sum with the
whole model's forward + backward, so "rest" (residual adds, reshapes, the CLS splice, fusion
across component boundaries) is what the pieces do not explain. Same run, same device: read the
shares, not the absolute times, on a CPU. Writes benchmarks/results/components_<backend>.json.
"""

from __future__ import annotations

import common  # noqa: F401  (sets sys.path; before project imports)

import argparse
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from westworld_jax.model import registry, ssm as ssm_lib  # noqa: E402
from westworld_jax.model.embeddings import TokenEmbedding  # noqa: E402
from westworld_jax.model.loss import next_step_loss  # noqa: E402
from westworld_jax.model.mamba import SelectiveSSM  # noqa: E402
from westworld_jax.model.moe import SysMoE  # noqa: E402
from westworld_jax.model.westworld import ChannelAttention, dummy_batch  # noqa: E402


class _FFN(nn.Module):  # the block's FFN (ffn_in -> gelu -> ffn_out)
  d_ff: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.d_ff, dtype=self.dtype)(x)
    return nn.Dense(x.shape[-1], dtype=self.dtype)(nn.gelu(y))


class _LayerNorms(nn.Module):  # the block's five post-LNs (float32, as the block runs them)
  @nn.compact
  def __call__(self, x):
    for i in range(5):
      x = nn.LayerNorm(dtype=jnp.float32, name=f"ln{i}")(x)
    return x


class _HeadLoss(nn.Module):  # head + masked next-step cross-entropy (the training loss)
  num_bins: int
  history: int

  @nn.compact
  def __call__(self, x_bctd, batch):
    logits = jnp.swapaxes(nn.Dense(self.num_bins, dtype=jnp.float32)(x_bctd), 1, 2)
    return next_step_loss(logits, batch, first_target_step=self.history)


def _timed(fn, args, repeats: int) -> tuple[float, float]:
  """(compile s, median ms) of a jitted fn(*args)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  return compile_s, common.median_ms(compiled, args, repeats)


def _fwd_bwd(module, *inputs):
  """(fn, args): fn(params, float inputs, cotangent) -> grads of <module(*inputs), cotangent> for the
  params and the floating inputs (masks and indices are closed over)."""
  floating = [k for k, i in enumerate(inputs) if jnp.issubdtype(i.dtype, jnp.floating)]

  def loss(params, fins, cot):
    full = list(inputs)
    for k, v in zip(floating, fins):
      full[k] = v
    out = module.apply({"params": params}, *full)
    out = out[0] if isinstance(out, tuple) else out  # SysMoE: (y, aux)
    return jnp.sum(out.astype(jnp.float32) * cot)

  params = jax.jit(module.init)(jax.random.key(0), *inputs)["params"]
  out = jax.eval_shape(lambda p: module.apply({"params": p}, *inputs), params)
  out = out[0] if isinstance(out, tuple) else out
  cot = jax.random.normal(jax.random.key(1), out.shape, jnp.float32)
  return jax.grad(loss, argnums=(0, 1)), (params, tuple(inputs[k] for k in floating), cot)


def run(size: str, batch: int, steps: int, co: int, ca: int, repeats: int, overrides: dict) -> dict:
  wm = registry.build("westworld", size, max_window_len=max(steps, 32), **overrides)
  cfg = wm.config
  dt = jnp.dtype(cfg.dtype)
  b, t, d, L = batch, steps, cfg.d_model, cfg.n_layers
  rng = np.random.default_rng(0)
  data = dummy_batch(cfg, batch_size=b, num_steps=t, num_obs=co, num_act=ca)
  data.update(
    obs=jnp.asarray(rng.uniform(size=(b, t, co)), jnp.float32),
    act=jnp.asarray(rng.uniform(size=(b, t, ca)), jnp.float32),
  )
  x = jnp.asarray(rng.normal(size=(b, co, t, d)), jnp.float32)
  act = jnp.asarray(rng.normal(size=(b, ca, t, d)), jnp.float32)
  obs_mask, act_mask = jnp.ones((b, co), bool), jnp.ones((b, ca), bool)
  cls = 1 if cfg.system_embedding in ("cls", "robot") else 0
  x_sld = jnp.asarray(rng.normal(size=(b * co, t + cls, d)), jnp.float32)
  sys_sd = jnp.asarray(rng.normal(size=(b * co, d)), jnp.float32)

  moe = SysMoE(
    d_model=d,
    d_expert=cfg.d_expert,
    num_experts=cfg.num_experts,
    mode=cfg.moe_mode,
    top_k=cfg.top_k,
    capacity_factor=cfg.capacity_factor,
    lb_loss_coef=cfg.lb_loss_coef,
    z_loss_coef=cfg.z_loss_coef,
    dtype=dt,
  )
  ssm = SelectiveSSM(
    d_model=d,
    d_state=cfg.ssm_d_state,
    expand=cfg.ssm_expand,
    d_conv=cfg.ssm_d_conv,
    scan_impl=cfg.ssm_scan_impl,
    chunk_size=cfg.ssm_chunk_size,
    dtype=dt,
  )
  # name -> (module, inputs, times per step)
  parts = {
    "embedding": (TokenEmbedding(cfg), (data,), 1),
    "self-attention": (ChannelAttention(d, cfg.n_heads, dt), (x, x, obs_mask), L),
    "cross-attention": (ChannelAttention(d, cfg.n_heads, dt), (x, act, act_mask), L),
    "ffn": (_FFN(cfg.d_ff, dt), (x,), L),
    f"ssm layer ({ssm_lib.resolve_impl(cfg.ssm_scan_impl)} scan)": (ssm, (x_sld,), L),
    f"sys-moe ({cfg.moe_mode}, {cfg.num_experts} experts)": (moe, (x_sld[:, :t], sys_sd), L),
    "layernorms (5 per block)": (_LayerNorms(), (x,), L),
    "head + loss": (_HeadLoss(cfg.num_bins, cfg.history), (x, data), 1),
  }
  rows = []
  for name, (module, inputs, times) in parts.items():
    if name == "embedding":  # batch dict input: differentiate params only
      params = jax.jit(module.init)(jax.random.key(0), data)["params"]
      out = jax.eval_shape(lambda p: module.apply({"params": p}, data), params)
      cots = [jax.random.normal(jax.random.key(1), o.shape, jnp.float32) for o in out]
      fn = lambda p, c: jax.grad(
        lambda p: sum(
          jnp.sum(o.astype(jnp.float32) * ci)  # noqa: E731
          for o, ci in zip(module.apply({"params": p}, data), c)
        )
      )(p)
      args = (params, cots)
    elif name == "head + loss":
      params = jax.jit(module.init)(jax.random.key(0), x, data)["params"]
      fn = lambda p, xx: jax.grad(lambda p, xx: module.apply({"params": p}, xx, data), argnums=(0, 1))(p, xx)  # noqa: E731
      args = (params, x)
    else:
      fn, args = _fwd_bwd(module, *inputs)
    compile_s, ms = _timed(fn, args, repeats)
    rows.append(
      {
        "component": name,
        "ms": ms,
        "times_per_step": times,
        "ms_per_step": ms * times,
        "compile_s": round(compile_s, 2),
      }
    )
    print(f"{name:34} {ms:9.2f} ms x {times}", flush=True)

  params = jax.jit(wm.init)(jax.random.key(0), data)
  full = lambda p: jax.grad(lambda p: wm.loss(p, data, jax.random.key(2))[0])(p)  # noqa: E731
  compile_s, full_ms = _timed(full, (params,), repeats)
  total = sum(r["ms_per_step"] for r in rows)
  for r in rows:
    r["share_of_sum"] = r["ms_per_step"] / total
  return {
    "size": size,
    "batch": b,
    "steps": t,
    "obs_channels": co,
    "act_channels": ca,
    "dtype": cfg.dtype,
    "scan": ssm_lib.resolve_impl(cfg.ssm_scan_impl),
    "n_layers": L,
    "components": rows,
    "sum_ms": total,
    "model_fwd_bwd_ms": full_ms,
    "model_compile_s": round(compile_s, 2),
    "rest_ms": full_ms - total,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", default=None, help="model size (default: tiny on CPU, base elsewhere)")
  p.add_argument("--batch", type=int, default=0, help="0: 8 on CPU, 14 elsewhere (the authors' batch)")
  p.add_argument("--steps", type=int, default=0, help="window length (0: 32 for tiny, 150 otherwise)")
  p.add_argument("--obs_channels", type=int, default=0, help="0: 16 for tiny, 60 otherwise (benchmarks/train.py)")
  p.add_argument("--act_channels", type=int, default=0, help="0: 8 for tiny, 18 otherwise")
  p.add_argument(
    "--dtype", default="", help="compute dtype override (base trains in bfloat16: experiments/pretrain.py)"
  )
  p.add_argument("--scan", default="", help="ssm_scan_impl override (default: the size's, 'auto')")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  backend = jax.default_backend()
  size = a.size or ("tiny" if backend == "cpu" else "base")
  tiny = size == "tiny"
  batch = a.batch or (8 if backend == "cpu" else 14)
  steps = a.steps or (32 if tiny else 150)
  co, ca = a.obs_channels or (16 if tiny else 60), a.act_channels or (8 if tiny else 18)
  overrides = {"ssm_scan_impl": a.scan} if a.scan else {}
  if a.dtype or size == "base":  # base trains in bf16 (experiments/pretrain.py:base)
    overrides["dtype"] = a.dtype or "bfloat16"
  res = run(size, batch, steps, co, ca, a.repeats, overrides)
  res.update(
    backend=backend, device=jax.devices()[0].device_kind, jax_version=jax.__version__, python=platform.python_version()
  )
  print(
    f"\n{res['device']}: {size} model, batch {batch}, {steps} steps, {co} obs + {ca} act channels, {res['dtype']}, "
    f"{res['scan']} scan; fwd+bwd"
  )
  print(f"{'component':34} {'ms':>9} {'x':>3} {'ms/step':>9} {'share':>6}")
  for r in res["components"]:
    print(
      f"{r['component']:34} {r['ms']:9.2f} {r['times_per_step']:3d} {r['ms_per_step']:9.2f} {r['share_of_sum']:6.1%}"
    )
  print(f"{'sum of components':34} {'':9} {'':3} {res['sum_ms']:9.2f}")
  print(f"{'whole model fwd+bwd':34} {'':9} {'':3} {res['model_fwd_bwd_ms']:9.2f}")
  print(f"{'rest (glue, fusion across parts)':34} {'':9} {'':3} {res['rest_ms']:9.2f}")
  common.write_result(res, f"components_{backend}", a.out)


if __name__ == "__main__":
  main()
