"""Wall-clock limits in tests are hang guards, never what a test checks: each is the time a test may take
on an idle 2-core machine, scaled by WESTWORLD_HANG_GUARD_SCALE (default 4) so that the suite passes on a
machine another job keeps busy. conftest.py scales every `pytest.mark.timeout` the same way."""

import os

SCALE = float(os.environ.get("WESTWORLD_HANG_GUARD_SCALE", "4"))


def guard(seconds: float) -> float:
  """A subprocess or wait limit of `seconds` on an idle machine, as a hang guard."""
  return seconds * SCALE
