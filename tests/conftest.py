"""Shared test setup: the commands' persistent JAX compilation cache (recompiles drop from ~10 s to ~2 s;
test subprocesses inherit it) and hang-guard time limits."""

import os

import pytest

from tests import hang_guard
from westworld_jax import cli

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cli.compilation_cache_dir())  # the commands' cache
# Every program is cached, however fast it compiled: the test processes and their subprocesses compile many
# of the same small programs, and a cold run reuses them across processes.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
  """The tests run the library as the commands do: orbax's orphaned reports after a failed checkpoint
  read or write are dropped (cli.quiet_orbax_orphans, installed by every command). trylast: it wraps
  pytest's own unraisable-exception hook, which keeps reporting everything else."""
  del config
  cli.quiet_orbax_orphans()


def pytest_collection_modifyitems(config, items):
  """Every test's time limit is a hang guard (tests/hang_guard.py): its `timeout` mark, else pytest.ini's,
  scaled so that a busy machine never fails a test on time alone."""
  default = float(config.getini("timeout") or 300)
  for item in items:
    mark = item.get_closest_marker("timeout")
    seconds = float(mark.args[0]) if mark and mark.args else default
    item.add_marker(pytest.mark.timeout(hang_guard.guard(seconds)), append=False)
