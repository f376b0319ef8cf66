"""Ahead-of-time compilation of the training step (westworld_jax/training/aot.py)."""

import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import pretrain  # noqa: E402
from westworld_jax.training import aot  # noqa: E402


@pytest.mark.timeout(300)
def test_compile_train_step_reports_the_step_memory():
  cfg = pretrain.get_config("tiny")
  step = aot.compile_train_step(
    cfg, jax.devices()[:1], batch=4, obs=8, act=4, compiler_options={"xla_embed_ir_in_executable": False}
  )
  assert step.num_devices == 1 and step.batch == 4 and step.params > 1000
  assert step.argument_gib > 0 and step.total_gib >= step.argument_gib - step.alias_gib
  assert step.model_tflop > 0
  with pytest.raises(Exception, match="no_such_xla_option"):  # the options reach XLA
    aot.compile_train_step(cfg, jax.devices()[:1], batch=4, obs=8, act=4, compiler_options={"no_such_xla_option": True})


def test_gpu_devices_without_the_cuda_plugin_says_what_to_install(tmp_path):
  with pytest.raises(RuntimeError, match="pip install jax-cuda12-pjrt"):
    aot.gpu_devices(plugin=str(tmp_path / "xla_cuda_plugin.so"))
  if aot.cuda_plugin_path() is None:
    with pytest.raises(RuntimeError, match="pip install jax-cuda12-pjrt"):
      aot.gpu_devices()


@pytest.mark.timeout(300)
def test_triton_scan_compiles_for_an_h100_without_a_gpu():
  # Only where XLA's CUDA plugin is installed (benchmarks/gpu_aot.py says how; CI does not): the
  # interpreter tests run the kernel's semantics, this checks XLA's own Triton accepts its IR.
  if aot.cuda_plugin_path() is None:
    pytest.skip("XLA's CUDA plugin (jax-cuda12-pjrt) is not installed")
  import jax.numpy as jnp
  from westworld_jax.model.ssm import selective_scan

  dev = aot.gpu_devices(1)[0]
  sh = jax.sharding.SingleDeviceSharding(dev)
  shapes = [(6, 40, 32), (6, 40, 32), (32, 16), (6, 40, 16), (6, 40, 16)]
  args = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=sh) for s in shapes]
  for chunk in (8, 16, 12):  # whole, in pieces with tiles, in pieces row by row
    fn = jax.grad(lambda *a: jnp.sum(selective_scan(*a, impl="kernel", chunk_size=chunk)[0]), argnums=(0, 1, 2, 3, 4))
    hlo = jax.jit(fn).lower(*args).compile(aot.GPU_AOT_OPTIONS).as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 2, chunk  # the forward and backward kernels
