"""MPPI's settings: one frozen dataclass, the single place each default value is written.

Standard library only (plus the dependency-free ConfigMixin): experiments/control.py reads these
defaults while the control CLI parses its flags, before the process is pinned to a core and jax is
imported (control/experiment.py: prepare_process).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from westworld_jax.config_mixin import ConfigMixin

NOISE_KINDS = ("ou", "smooth", "white")


@dataclasses.dataclass(frozen=True)
class MPPIConfig(ConfigMixin):
  config_label: ClassVar[str] = "MPPI config"

  samples: int = 256  # K action sequences per environment and iteration
  horizon: int = 100  # Hp control steps
  iterations: int = 1  # sample-and-reweight rounds per control step
  noise: float = 0.3  # noise std as a fraction of each action's half-range
  noise_kind: str = "ou"  # 'ou' | 'smooth' | 'white'
  correlation: float = 0.9  # 'ou': noise autocorrelation between consecutive steps
  knots: int = 8  # 'smooth': independent noise at this many knots, linearly interpolated
  temperature: float = 0.1  # lambda
  normalize_costs: bool = True  # lambda relative to the std of the sample costs (scale-free)
  discount: float = 1.0
  noise_decay: float = 0.5  # noise multiplier per extra iteration
  keep_mean: bool = True  # sample 0 is the plan itself (the warm start can only improve)

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
