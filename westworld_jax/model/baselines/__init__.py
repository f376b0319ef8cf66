"""The baseline world models, each a WorldModel (world_model.py) built by the registry:
TrajWorld (trajworld.py), TDM (tdm.py) and the MLPEnsemble (mlp_ensemble.py); layers.py holds
the pieces they share."""

from westworld_jax.model.baselines.mlp_ensemble import (
  MLP_ENSEMBLE_SIZES,
  MLPEnsembleConfig,
  build_mlp_ensemble,
  get_mlp_ensemble_config,
  mlp_ensemble_model,
)
from westworld_jax.model.baselines.tdm import TDM_SIZES, TDMConfig, build_tdm, get_tdm_config, tdm_model
from westworld_jax.model.baselines.trajworld import (
  TRAJWORLD_SIZES,
  TrajWorldConfig,
  build_trajworld,
  get_trajworld_config,
  trajworld_model,
)

__all__ = [
  "MLP_ENSEMBLE_SIZES",
  "MLPEnsembleConfig",
  "build_mlp_ensemble",
  "get_mlp_ensemble_config",
  "mlp_ensemble_model",
  "TDM_SIZES",
  "TDMConfig",
  "build_tdm",
  "get_tdm_config",
  "tdm_model",
  "TRAJWORLD_SIZES",
  "TrajWorldConfig",
  "build_trajworld",
  "get_trajworld_config",
  "trajworld_model",
]
