"""Learning-curve report: every (seed, step) evaluation pooled per step, beside hold-last."""

import json
import os

import pytest

from experiments import learning_curve as lc_config
from westworld_jax import learning_curve as lc


def _rec(seed, step, mae):
  return {
    "model": "westworld",
    "seed": seed,
    "step": step,
    "robots": {"hopper": {"mae_x100": mae, "mse_x100": mae / 4, "first_step_mae_x100": mae / 10}},
  }


@pytest.mark.timeout(60)
def test_report_pools_seeds_per_step_beside_hold_last(tmp_path):
  cfg = lc_config.get_config("cpu")
  cfg.seeds = (0, 1)
  records = [_rec(0, 250, 14.0), _rec(1, 250, 16.0), _rec(0, 500, 12.0), _rec(1, 500, 13.0)]
  hold = {"hopper": {"mae_x100": 11.97, "mse_x100": 2.96, "first_step_mae_x100": 1.43}}
  out = lc.report(cfg, str(tmp_path), records, hold)
  md = (tmp_path / "results.md").read_text()
  assert "| 250 | 15.00 ± 1.41 (1.50 ± 0.14) |" in md
  assert "| 500 | 12.50 ± 0.71 (1.25 ± 0.07) |" in md
  assert "| hold last obs (reference) | 11.97 (1.43) |" in md
  assert os.path.getsize(tmp_path / "plots" / "learning_curve.png") > 1000
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["hold_last"] == hold and len(saved["records"]) == 4 and out["seeds"] == [0, 1]


def test_config_variants():
  cfg = lc_config.get_config("cpu")
  assert cfg.pretrain.checkpoint.every * 12 == cfg.pretrain.total_steps  # 12 points on the curve
  assert cfg.pretrain.checkpoint.keep >= 12 and cfg.model in cfg.model_configs
  with pytest.raises(ValueError, match="cpu or tiny"):
    lc_config.get_config("base")
