"""Model configuration: one frozen dataclass and the named sizes (tiny, control, base, large),
plus `sized_config` (a config class at a named size); every config dataclass of the project shares
westworld_jax/config_mixin.py's `ConfigMixin`.

`ModelConfig` is plain data (hashable, so it can be a flax Module field and a jit static
argument). Experiment configs (ml_collections) hold a `model` ConfigDict and build it with
`ModelConfig.from_dict(cfg.model)`, or name a size: `get_model_config("base", history=50)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from westworld_jax.config_mixin import ConfigMixin
from westworld_jax.model import ssm


def sized_config(cls, sizes: Mapping[str, Mapping[str, Any]], size: str, **overrides: Any):
  """cls(**sizes[size], **overrides); an unknown size lists the known ones."""
  if size not in sizes:
    label = cls.label() if hasattr(cls, "label") else cls.__name__
    raise ValueError(f"unknown {label} size {size!r}; choose one of {sorted(sizes)}.")
  return cls(**{**sizes[size], **overrides})


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigMixin):
  """Architecture of the WestWorld model (docs/architecture.md; every difference from the authors' model: docs/upstream.md)."""

  config_label: ClassVar[str] = "model config"

  # Trunk.
  d_model: int = 256
  n_layers: int = 6
  n_heads: int = 4
  d_ff: int = 512  # FFN after the channel attentions
  num_bins: int = 256  # K, HL-Gauss histogram bins (input and output)
  # As upstream: on attention weights, attention outputs and the FFN output; none in the
  # SSM, the Sys-MoE or the embeddings.
  dropout_rate: float = 0.1
  # Std of the normal init of the embedding tables and the value projection (upstream
  # N(0, 1), PyTorch's nn.Embedding default); the query token and CLS use 0.02.
  embed_init_std: float = 1.0
  # Value input of a token: "histogram" (upstream) the bias-free projection of its HL-Gauss histogram;
  # "histogram_linear" plus a bias-free projection of the value itself, a direction the token's value
  # rides on linearly (a histogram carries it only as precisely as its bins are learned to be read).
  value_input: str = "histogram"

  # Loss: logits[:, t] predicts obs[:, t + 1]; targets at steps >= first_target_step count.
  #   1 (upstream): every next-step target of the window, history positions included (they
  #     see the real observation, so they teach the one-step dynamics);
  #   history: the predicted horizon only.
  first_target_step: int = 1
  # Cross-entropy target (loss.py): "bin" (upstream) one-hot on the value's bin; "hl_gauss" its
  # HL-Gauss histogram, read out without the half-bin quantisation of "bin".
  loss_target: str = "bin"
  # Read-out: "none" (upstream) the head's logits; "last_value" adds to them a learned multiple of the
  # log HL-Gauss histogram of the last observed value of the channel (the token's own value at a history
  # step, the last history value over the horizon), floored at log(1e-4): with the head at zero the
  # prediction is that value to sub-bin precision (persistence), and the head learns the change.
  readout_prior: str = "none"

  # Selective SSM over time (westworld_jax.model.mamba.SelectiveSSM).
  ssm_d_state: int = 64
  ssm_expand: int = 2
  ssm_d_conv: int = 4
  # A name in ssm.IMPLS, or "auto": the Pallas kernel on GPU (Triton) and TPU (Mosaic), else "chunked".
  ssm_scan_impl: str = "auto"
  ssm_chunk_size: int = 16

  # Sys-MoE.
  num_experts: int = 4
  d_expert: int = 512  # hidden width of each expert MLP
  moe_mode: str = "dense"  # "dense" (upstream soft mixture) | "topk" (sparse, capacity-limited)
  top_k: int = 1
  capacity_factor: float = 1.25
  lb_loss_coef: float = 1e-2  # load-balancing loss weight (topk only)
  z_loss_coef: float = 0.0  # router z-loss weight (either mode)
  # What the router sees, and so what shares one gate:
  #   "cls"   (faithful) a learned CLS token per block passes through each channel's SSM;
  #           its output gates that channel's whole sequence;
  #   "robot" (ablation) the CLS outputs mean-pooled over a sample's real channels;
  #           one gate per sample;
  #   "token" (strictly causal) each token's own SSM output gates that token.
  system_embedding: str = "cls"
  # Where the CLS token sits in each channel's SSM sequence:
  #   "history" after the last history step: the gate sees history observations and
  #             history actions only, so predictions stay causal in future actions;
  #   "end"     after the last step (exactly upstream): the gate also sees every
  #             future action and the query tokens.
  cls_position: str = "history"
  # True (upstream): block i + 1's CLS input is block i's CLS output; False: a fresh
  # learned CLS per block.
  cls_from_previous_block: bool = True
  # LayerNorms around the SSM and the MoE (each block):
  #   "upstream": z = LN(x); z = z + SSM(z); gate = softmax(W LN(cls_z));
  #               out = LN(z + sum_e g_e MLP_e(z)); CLS passed on = LN(cls_z);
  #   "post":     z = LN(x + SSM(x)); gate = softmax(W cls_z); out = LN(z + MoE(z)).
  block_norms: str = "upstream"
  # Logical axis of the experts (model/sharding.py): the mesh rule table maps it to the mesh axis
  # the expert weights are split over and the Sys-MoE dispatches over; None = no expert parallelism.
  expert_axis: str | None = None
  # Mesh axes that shard routing units (batch-major) outside the MoE.
  token_axes: tuple[str, ...] = ("data", "expert")

  # Windows and embedding-table sizes.
  history: int = 50  # H: obs[:, :H] are seen; later obs are replaced by the query token
  max_window_len: int = 150  # time-step table (window length T <= max_window_len)
  max_obs_channels: int = 128
  max_act_channels: int = 64
  num_kinds: int = 16  # channel-kind ids are < num_kinds (obs and actions have own tables)
  # The structural embedding of each channel's body in the kinematic tree (LCRS traversal ranks, as
  # upstream); False drops it (the ablation of what it buys: channel, kind, type and time remain).
  structural_embedding: bool = True
  max_objects: int = 8  # structural object ids < max_objects
  max_bodies: int = 64  # pre/in/post-order ranks < max_bodies

  # Numerics: params in param_dtype; matmuls in dtype; softmax, LayerNorm, scan in float32.
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False  # rematerialise each block in the backward pass

  def __post_init__(self):
    if self.d_model % 4:
      raise ValueError(
        f"d_model={self.d_model} must be divisible by 4 (the structural embedding concatenates four d/4 tables)."
      )
    if self.d_model % self.n_heads:
      raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}.")
    if self.moe_mode not in ("dense", "topk"):
      raise ValueError(f"moe_mode={self.moe_mode!r}: use 'dense' or 'topk'.")
    if self.system_embedding not in ("cls", "robot", "token"):
      raise ValueError(f"system_embedding={self.system_embedding!r}: use 'cls', 'robot' or 'token'.")
    if self.cls_position not in ("history", "end"):
      raise ValueError(f"cls_position={self.cls_position!r}: use 'history' or 'end'.")
    if self.value_input not in ("histogram", "histogram_linear"):
      raise ValueError(f"value_input={self.value_input!r}: use 'histogram' or 'histogram_linear'.")
    if self.readout_prior not in ("none", "last_value"):
      raise ValueError(f"readout_prior={self.readout_prior!r}: use 'none' or 'last_value'.")
    if self.loss_target not in ("bin", "hl_gauss"):
      raise ValueError(f"loss_target={self.loss_target!r}: use 'bin' or 'hl_gauss'.")
    if self.block_norms not in ("upstream", "post"):
      raise ValueError(f"block_norms={self.block_norms!r}: use 'upstream' or 'post'.")
    if not 1 <= self.first_target_step <= self.history:
      raise ValueError(
        f"first_target_step={self.first_target_step} must be in "
        f"[1, history={self.history}] (1: every next-step target; "
        "history: the horizon only)."
      )
    if not 1 <= self.top_k <= self.num_experts:
      raise ValueError(f"top_k={self.top_k} must be in [1, num_experts={self.num_experts}].")
    scans = ("auto", *ssm.IMPLS)
    if self.ssm_scan_impl not in scans:
      known = ", ".join(map(repr, scans[:-1])) + f" or {scans[-1]!r}"
      raise ValueError(f"ssm_scan_impl={self.ssm_scan_impl!r}: use {known}.")
    if self.history > self.max_window_len:
      raise ValueError(f"history={self.history} exceeds max_window_len={self.max_window_len}.")


SIZES: dict[str, dict[str, Any]] = {
  # CPU tests: a few seconds to compile and run.
  "tiny": dict(
    d_model=32,
    n_layers=2,
    n_heads=2,
    d_ff=64,
    num_bins=32,
    ssm_d_state=8,
    ssm_chunk_size=8,
    num_experts=2,
    d_expert=64,
    history=8,
    max_window_len=32,
    max_obs_channels=16,
    max_act_channels=8,
    max_bodies=16,
  ),
  # The authors' size: 14.38M parameters here; the paper states 14.6M (tests/test_model.py checks 2%).
  "base": dict(),
  # Small model for fast model-based control.
  "control": dict(n_layers=2, ssm_d_state=16),
  # Scale-out: sparse top-k routing over many experts (>= 100M parameters).
  "large": dict(
    d_model=512,
    n_layers=8,
    n_heads=8,
    d_ff=2048,
    ssm_d_state=64,
    num_experts=16,
    d_expert=1024,
    moe_mode="topk",
    top_k=2,
    capacity_factor=1.25,
    z_loss_coef=1e-3,
    dtype="bfloat16",
    remat=True,
  ),
}


def get_model_config(name: str = "base", **overrides: Any) -> ModelConfig:
  """The named size with `overrides` applied (e.g. get_model_config("tiny", moe_mode="topk"))."""
  return sized_config(ModelConfig, SIZES, name, **overrides)
