"""Sys-MoE: routing, dispatch, balance loss, and expert-parallel == unsharded on 8 CPU devices."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from westworld_jax.model.moe import Router, SysMoE, expert_capacity, load_balancing_loss, router_z_loss, topk_dispatch
from tests.hang_guard import guard

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
G, L, D, E = 12, 5, 8, 4


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(G, L, D)), jnp.float32)
  sys_ = jnp.asarray(rng.normal(size=(G, D)), jnp.float32)
  valid = jnp.asarray(np.arange(G) < G - 2)  # two padding units
  return x, sys_, valid


@pytest.mark.timeout(60)
def test_dense_is_softmax_mixture_of_all_experts():
  x, sys_, valid = _inputs()
  moe = SysMoE(D, 16, E, mode="dense")
  variables = moe.init(jax.random.key(0), x, sys_, valid)
  y, aux = moe.apply(variables, x, sys_, valid)
  p = variables["params"]
  gate = jax.nn.softmax(sys_ @ p["router"]["gate"]["kernel"] + p["router"]["gate"]["bias"])
  h = jax.nn.gelu(jnp.einsum("gld,edf->eglf", x, p["expert_w_in"]) + p["expert_b_in"][:, None, None])
  expert_out = jnp.einsum("eglf,efd->egld", h, p["expert_w_out"]) + p["expert_b_out"][:, None, None]
  np.testing.assert_allclose(y, jnp.einsum("ge,egld->gld", gate, expert_out), atol=1e-5)
  assert float(aux) == 0.0


@pytest.mark.timeout(60)
def test_topk_with_all_experts_and_room_equals_dense():
  x, sys_, valid = _inputs()
  dense = SysMoE(D, 16, E, mode="dense")
  variables = dense.init(jax.random.key(0), x, sys_, valid)
  topk = SysMoE(D, 16, E, mode="topk", top_k=E, capacity_factor=float(E), lb_loss_coef=0.0)
  y_dense, _ = dense.apply(variables, x, sys_, valid)
  y_topk, _ = topk.apply(variables, x, sys_, valid)
  v = np.asarray(valid)
  np.testing.assert_allclose(y_topk[v], y_dense[v], atol=1e-5)
  assert float(jnp.abs(y_topk[~v]).max()) == 0.0  # padding units are never dispatched


@pytest.mark.timeout(60)
def test_capacity_drops_overflow_units():
  # Every unit picks expert 2 first; capacity 3 keeps the first three valid units.
  idx = jnp.tile(jnp.array([[2, 0]]), (6, 1))
  w = jnp.full((6, 2), 0.5)
  valid = jnp.array([True, False, True, True, True, True])
  dispatch, combine = topk_dispatch(idx, w, valid, E, capacity=3)
  kept = np.asarray(dispatch[:, 2].sum(-1))
  np.testing.assert_array_equal(kept, [1, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(np.asarray(dispatch[:, 0].sum(-1)), [1, 0, 1, 1, 0, 0])
  assert float(dispatch.sum(0).max()) == 1.0  # one unit per slot
  np.testing.assert_allclose(combine, dispatch * 0.5)
  assert expert_capacity(12, 4, 1, 1.0) == 3 and expert_capacity(12, 4, 2, 100.0) == 12


@pytest.mark.timeout(60)
def test_load_balancing_loss():
  g = 64
  uniform = jnp.full((g, E), 1.0 / E)
  balanced_idx = (jnp.arange(g) % E)[:, None]
  assert float(load_balancing_loss(uniform, balanced_idx)) == pytest.approx(1.0)
  collapsed = jax.nn.one_hot(jnp.zeros(g, jnp.int32), E)
  assert float(load_balancing_loss(collapsed, jnp.zeros((g, 1), jnp.int32))) == pytest.approx(E)
  # Over the whole batch, not per unit: units that each pick one expert but together cover
  # all experts evenly are balanced, whatever each unit's own choice.
  peaked = jax.nn.one_hot(jnp.arange(g) % E, E) * 0.7 + 0.3 / E
  assert float(load_balancing_loss(peaked, balanced_idx)) == pytest.approx(1.0, abs=1e-5)
  # Padding units do not count.
  valid = jnp.arange(g) < g // 2
  skewed = jnp.where(valid[:, None], balanced_idx, 0)
  assert float(load_balancing_loss(uniform, skewed, valid)) == pytest.approx(1.0)
  # A uniform router is at the minimum of the loss over router logits.
  router = Router(E, 2)
  sys_ = jax.random.normal(jax.random.key(1), (g, D))
  params = router.init(jax.random.key(0), sys_)
  zero = jax.tree.map(jnp.zeros_like, params)

  def lb(p):
    out = router.apply(p, sys_)
    return load_balancing_loss(out.probs, out.top_k_indices)

  assert float(lb(zero)) == pytest.approx(1.0)
  assert float(lb(params)) >= 1.0 - 1e-6
  assert float(router_z_loss(jnp.zeros((g, E)))) == pytest.approx(np.log(E) ** 2)


@pytest.mark.timeout(60)
def test_expert_parallel_without_mesh_says_what_to_do():
  x, sys_, valid = _inputs()
  moe = SysMoE(D, 16, E, expert_axis="expert")
  with pytest.raises(ValueError, match="set_mesh"):
    moe.init(jax.random.key(0), x, sys_, valid)


_SHARDED_CHECK = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=240"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from westworld_jax.model.moe import SysMoE, expert_param_specs

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((2, 4), ("data", "expert"), axis_types=(AxisType.Auto,) * 2)
    rng = np.random.default_rng(0)
    G, L, D, E = 16, 5, 8, 8
    x = jnp.asarray(rng.normal(size=(G, L, D)), jnp.float32)
    sys_ = jnp.asarray(rng.normal(size=(G, D)), jnp.float32)
    valid = jnp.asarray(rng.uniform(size=G) < 0.8)
    # topk with room for every unit, so local (per-shard) capacity drops nothing either.
    for mode, kw in (("dense", {}), ("topk", dict(top_k=2, capacity_factor=8.0))):
        ref_moe = SysMoE(D, 16, E, mode=mode, **kw)
        params = ref_moe.init(jax.random.key(0), x, sys_, valid)
        loss = lambda m, p, *a: jnp.sum(m.apply(p, *a)[0] ** 2)
        ref, ref_aux = ref_moe.apply(params, x, sys_, valid)
        ref_grad = jax.grad(lambda p: loss(ref_moe, p, x, sys_, valid))(params)
        ep_moe = SysMoE(D, 16, E, mode=mode, expert_axis="expert", **kw)
        with jax.set_mesh(mesh):
            shard = lambda spec: NamedSharding(mesh, spec)
            p_sh = jax.device_put(params, jax.tree.map(shard, expert_param_specs(params)))
            assert p_sh["params"]["expert_w_in"].sharding.spec == P("expert")
            units = [jax.device_put(a, shard(P(("data", "expert")))) for a in (x, sys_, valid)]
            out, aux = jax.jit(lambda p, *a: ep_moe.apply(p, *a))(p_sh, *units)
            grad = jax.jit(jax.grad(lambda p, *a: loss(ep_moe, p, *a)))(p_sh, *units)
        np.testing.assert_allclose(out, ref, atol=1e-5)
        np.testing.assert_allclose(aux, ref_aux, atol=1e-7)
        for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
            np.testing.assert_allclose(a, b, atol=1e-4)
        print(mode, "ok", float(jnp.abs(out - ref).max()))
    print("SHARDED_OK")
""")


@pytest.mark.timeout(120)
def test_expert_parallel_equals_unsharded_on_8_devices():
  # A fresh interpreter: XLA_FLAGS must be set before jax initialises its CPU backend,
  # and this process has already imported jax.
  env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run(
    [sys.executable, "-c", _SHARDED_CHECK], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=guard(110)
  )
  assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stdout + proc.stderr


_SHARDED_MODEL_CHECK = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=240"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from westworld_jax.model import WestWorld, dummy_batch, expert_param_specs, get_model_config

    mesh = jax.make_mesh((2, 4), ("data", "expert"), axis_types=(AxisType.Auto,) * 2)
    cfg = get_model_config("tiny", num_experts=4)
    batch = dummy_batch(cfg, batch_size=8, num_steps=12, num_obs=3, num_act=2)
    rng = np.random.default_rng(0)
    batch["obs"] = jnp.asarray(rng.uniform(size=batch["obs"].shape), jnp.float32)
    batch["act"] = jnp.asarray(rng.uniform(size=batch["act"].shape), jnp.float32)
    model = WestWorld(cfg)
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    ref = jax.jit(lambda p, b: model.apply({"params": p}, b))(params, batch)["logits"]
    sharded = WestWorld(cfg.replace(expert_axis="expert"))
    with jax.set_mesh(mesh):
        shard = lambda spec: NamedSharding(mesh, spec)
        p_sh = jax.device_put(params, jax.tree.map(shard, expert_param_specs(params)))
        b_sh = jax.device_put(batch, shard(P(("data", "expert"))))
        out = jax.jit(lambda p, b: sharded.apply({"params": p}, b))(p_sh, b_sh)["logits"]
    np.testing.assert_allclose(out, ref, atol=1e-5)
    print("SHARDED_OK")
""")


@pytest.mark.timeout(120)
def test_whole_model_expert_parallel_equals_unsharded_on_8_devices():
  env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run(
    [sys.executable, "-c", _SHARDED_MODEL_CHECK],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=guard(110),
  )
  assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stdout + proc.stderr
