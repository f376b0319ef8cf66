"""The ablation grid: every variant builds and differs from the recipe only in its part; the table's rows."""

import jax
import numpy as np
import pytest

from experiments import ablations as ablations_config
from westworld_jax import ablations
from westworld_jax.model.batch import zeros_batch
from westworld_jax.training.run_files import build_model

CFG = ablations_config.get_config("cpu")


def _params(run_cfg):
  model = build_model(run_cfg.model)
  batch = {k: jax.numpy.asarray(v) for k, v in zeros_batch(1, run_cfg.model.history + 1, 8, 4).items()}
  shapes = jax.eval_shape(model.init, jax.random.key(0), batch)
  return {
    "/".join(str(getattr(k, "key", k)) for k in path): x.size for path, x in jax.tree_util.tree_leaves_with_path(shapes)
  }


@pytest.mark.timeout(120)
def test_variants_change_only_their_part():
  assert CFG.variants[0] == "westworld" and sorted(CFG.variants) == sorted(CFG.runs)
  ref = _params(CFG.runs.westworld)
  total = lambda p: sum(p.values())
  no_struct = _params(CFG.runs.no_structure)
  assert not any("structure" in k for k in no_struct) and any("structure" in k for k in ref)
  assert total(ref) - total(no_struct) == sum(v for k, v in ref.items() if "structure" in k)
  dense = _params(CFG.runs.dense_mlp)  # one expert with every expert's hidden units: the same MLP parameters
  experts = lambda p: sum(v for k, v in p.items() if "/moe/expert_" in k)
  assert experts(dense) == experts(ref) - sum(v for k, v in ref.items() if "/moe/expert_b_out" in k) // 2
  assert CFG.runs.top1.model.moe_mode == "topk" and CFG.runs.top1.model.top_k == 1
  assert CFG.runs.experts_8.model.num_experts == 8 and CFG.runs.token_gate.model.system_embedding == "token"
  for name in ("trajworld", "tdm", "mlp_ensemble"):
    assert CFG.runs[name].model.name == name
  recipe = CFG.runs.westworld.to_dict()
  for name in ("no_structure", "dense_mlp", "experts_8", "top1", "token_gate"):  # the rest of the recipe is kept
    other = CFG.runs[name].to_dict()
    assert {k: v for k, v in other.items() if k != "model"} == {k: v for k, v in recipe.items() if k != "model"}


def test_rows_from_reports():
  summ = lambda m, f, n: {
    "mae_x100_mean": m,
    "mae_x100_std": 0.1,
    "first_step_mae_x100_mean": f,
    "first_step_mae_x100_std": 0.0,
    "seeds": n,
  }
  reports = {
    "zero_shot": {
      "summary": {
        "westworld": {"robots": {"hopper": summ(10.0, 3.0, 3)}},
        ablations.HOLD: {"robots": {"hopper": summ(12.0, 4.0, 1)}},
      }
    },
    "few_shot": {"summary": {"no_structure fine-tuned": {"robots": {"ur5e": summ(7.0, 2.0, 3)}}}},
  }
  rows = ablations.rows(reports)
  assert {(r["variant"], r["setting"], r["robot"]) for r in rows} == {
    ("westworld", "zero_shot", "hopper"),
    (ablations.HOLD, "zero_shot", "hopper"),
    ("no_structure", "few_shot", "ur5e"),
  }
  r = next(r for r in rows if r["variant"] == "no_structure")
  assert r["mae_x100_mean"] == 7.0 and r["first_step_mae_x100_mean"] == 2.0 and r["seeds"] == 3
  md = ablations._markdown(rows, 3)
  assert "| westworld | 10.00 ± 0.10 (3.00) |" in md and np.isfinite(r["mae_x100_std"])


def test_train_only_trains_the_selected_runs_and_evaluates_nothing(monkeypatch, tmp_path):
  trained = []
  monkeypatch.setattr(ablations.loop, "train_to_end", lambda cfg, wd: trained.append((wd, cfg.seed)))

  def refuse(*a, **k):
    raise AssertionError("train_only must not evaluate")

  monkeypatch.setattr(ablations.evaluate_lib, "evaluate", refuse)
  monkeypatch.setattr(ablations.few_shot_lib, "finetune", refuse)
  cfg = CFG.copy_and_resolve_references()
  cfg.train_only, cfg.variants, cfg.seeds = True, ("no_structure", "tdm"), (2,)
  out = ablations.ablations(cfg, str(tmp_path))
  assert trained == [
    (ablations.run_dir(str(tmp_path), "no_structure", 2), 2),
    (ablations.run_dir(str(tmp_path), "tdm", 2), 2),
  ]
  assert out["runs"] == {"no_structure": [trained[0][0]], "tdm": [trained[1][0]]}
  assert not (tmp_path / "results.json").exists()
