"""The WestWorld model: tokenizer, embeddings, Sys-MoE, the network, its loss and configs."""
from westworld_jax.model.configs import SIZES, ModelConfig, get_model_config
from westworld_jax.model.loss import next_step_loss, prediction_metrics, target_mask
from westworld_jax.model.moe import (Router, RouterOutput, SysMoE, expert_param_specs,
                                     load_balancing_loss, router_z_loss)
from westworld_jax.model.tokenizer import (bin_centers, expectation, expectation_from_probs,
                                           hl_gauss_histogram, target_bins)
from westworld_jax.model.westworld import (WestWorld, check_batch, dummy_batch, init_params,
                                           param_count)

__all__ = [
    "SIZES", "ModelConfig", "get_model_config",
    "next_step_loss", "prediction_metrics", "target_mask",
    "Router", "RouterOutput", "SysMoE", "expert_param_specs", "load_balancing_loss",
    "router_z_loss",
    "bin_centers", "expectation", "expectation_from_probs", "hl_gauss_histogram", "target_bins",
    "WestWorld", "check_batch", "dummy_batch", "init_params", "param_count",
]
