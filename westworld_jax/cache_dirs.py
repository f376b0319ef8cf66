"""Where the project keeps what it can recompute (expert reference episodes, robot summaries):
$WESTWORLD_CACHE_DIR, else ~/.cache/westworld_jax. Standard library only: any unit may use it."""

from __future__ import annotations

import os

CACHE_ENV = "WESTWORLD_CACHE_DIR"


def cache_dir(*parts: str) -> str:
  """The cache root joined with `parts` (not created)."""
  root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "westworld_jax")
  return os.path.join(root, *parts)
