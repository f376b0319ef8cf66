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
  step = aot.compile_train_step(cfg, jax.devices()[:1], batch=4, obs=8, act=4,
                                compiler_options={"xla_embed_ir_in_executable": False})
  assert step.num_devices == 1 and step.batch == 4 and step.params > 1000
  assert step.argument_gib > 0 and step.total_gib >= step.argument_gib - step.alias_gib
  assert step.model_tflop > 0
  with pytest.raises(Exception, match="no_such_xla_option"):  # the options reach XLA
    aot.compile_train_step(cfg, jax.devices()[:1], batch=4, obs=8, act=4,
                           compiler_options={"no_such_xla_option": True})


def test_gpu_devices_without_the_cuda_plugin_says_what_to_install(tmp_path):
  with pytest.raises(RuntimeError, match="pip install jax-cuda12-pjrt"):
    aot.gpu_devices(plugin=str(tmp_path / "xla_cuda_plugin.so"))
