"""MPPI's settings: one frozen dataclass, the single place each default value is written.

Standard library only (plus the dependency-free ConfigMixin): experiments/control.py reads these
defaults while the control CLI parses its flags, before the process is pinned to a core and jax is
imported (control/experiment.py: prepare_process).

The defaults are this project's MPPI (noise a fraction of each action's half-range, costs
normalised by their spread, the plan set to the weighted mean of the clipped samples). The fields
after `keep_mean` select the paper authors' variant (docs/upstream.md, "Control protocol"): AR(2)
noise of a fixed per-dimension covariance, a mean step size, the control-cost term, expert
initialisation and expert tails, updates from the unclipped samples and a fall penalty; their
defaults leave the algorithm as it was.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from westworld_jax.config_mixin import ConfigMixin

NOISE_KINDS = ("ou", "smooth", "white", "ar2")
INITS = ("zero", "expert")
TAILS = ("repeat", "expert")


@dataclasses.dataclass(frozen=True)
class MPPIConfig(ConfigMixin):
  config_label: ClassVar[str] = "MPPI config"

  samples: int = 256  # K action sequences per environment and iteration
  horizon: int = 100  # Hp control steps
  iterations: int = 1  # sample-and-reweight rounds per control step
  noise: float = 0.3  # noise std as a fraction of each action's half-range
  noise_kind: str = "ou"  # 'ou' | 'smooth' | 'white' | 'ar2'
  correlation: float = 0.9  # 'ou': noise autocorrelation between consecutive steps
  knots: int = 8  # 'smooth': independent noise at this many knots, linearly interpolated
  temperature: float = 0.1  # lambda
  normalize_costs: bool = True  # lambda relative to the std of the sample costs (scale-free)
  discount: float = 1.0
  noise_decay: float = 0.5  # noise multiplier per extra iteration
  keep_mean: bool = True  # sample 0 is the plan itself (the warm start can only improve)
  # 'ar2': from step 2 on, eps_t <- b0 eps_t + b1 eps_{t-1} + b2 eps_{t-2} (in place, so recursive)
  filter_coeffs: tuple[float, ...] = (0.5, 0.5, 0.0)
  covariance: float = 0.0  # > 0: noise variance per action dimension, actuator units^2 (not `noise`)
  step_size: float = 1.0  # mean <- (1 - a) mean + a * weighted mean of the samples
  control_cost: bool = False  # add lambda * 0.5 sum_t mean_t' Sigma^-1 (mean_t + 2 eps_t) to each cost
  update_clipped: bool = True  # the weighted mean of the clipped samples (False: of the unclipped)
  init: str = "zero"  # first plan: 'zero' | 'expert' (the expert's mean action; Sigma its variance)
  tail: str = "repeat"  # the slot a shift frees: 'repeat' the last | 'expert' (a draw of its actions)
  expert_cov_scale: float = 0.8  # 'expert' init / tail: Sigma = scale * the expert's action variance
  fall_penalty: float = 0.0  # added per remaining horizon step at the step a rollout falls
  hold_after_fall: bool = False  # steps after a fall repeat its cost (else they count nothing)

  def __post_init__(self):
    if self.samples < 2 or self.horizon < 1 or self.iterations < 1:
      raise ValueError(
        f"MPPI needs samples >= 2, horizon >= 1, iterations >= 1; got samples={self.samples}, "
        f"horizon={self.horizon}, iterations={self.iterations}"
      )
    if self.noise_kind not in NOISE_KINDS:
      raise ValueError(f"noise_kind '{self.noise_kind}' unknown: choose one of {NOISE_KINDS}")
    if not 0.0 <= self.correlation < 1.0:
      raise ValueError(f"correlation must be in [0, 1), got {self.correlation}")
    if self.temperature <= 0 or self.noise < 0:
      raise ValueError(f"temperature must be > 0 and noise >= 0, got {self.temperature}, {self.noise}")
    if self.knots < 2:
      raise ValueError(f"knots must be >= 2, got {self.knots}")
    if len(self.filter_coeffs) != 3:
      raise ValueError(f"filter_coeffs are (b0, b1, b2), got {self.filter_coeffs}")
    if self.covariance < 0 or not 0.0 < self.step_size <= 1.0 or self.expert_cov_scale <= 0:
      raise ValueError(
        f"need covariance >= 0, 0 < step_size <= 1, expert_cov_scale > 0; got {self.covariance}, "
        f"{self.step_size}, {self.expert_cov_scale}"
      )
    if self.init not in INITS or self.tail not in TAILS:
      raise ValueError(f"init '{self.init}' / tail '{self.tail}': choose init from {INITS}, tail from {TAILS}")
    if self.fall_penalty < 0:
      raise ValueError(f"fall_penalty must be >= 0, got {self.fall_penalty}")

  @property
  def uses_expert(self) -> bool:
    """Whether the planner needs the expert's action statistics (a reference episode)."""
    return self.init == "expert" or self.tail == "expert"
