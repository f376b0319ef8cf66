"""One training run per workdir: an exclusive lock (locks.py) on <workdir>/.train.lock, held for the
whole run and released by the kernel when the process ends however it ends (no stale locks). Two runs on
one workdir would interleave checkpoints and metrics rows and leave steps that never restore."""

from __future__ import annotations

import contextlib
import os

from westworld_jax import locks
from westworld_jax.errors import UserError

LOCK_FILE = ".train.lock"


class WorkdirBusyError(UserError, RuntimeError):
  """Another training run holds the workdir."""


@contextlib.contextmanager
def held(workdir: str):
  """Holds the workdir's lock for the block; raises WorkdirBusyError (naming the holder) if taken."""
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)

  def busy(holder: str) -> UserError:
    return WorkdirBusyError(
      f"{workdir} is in use by another training run ({holder}): wait for it to end or stop it, "
      "or train in another --workdir (two runs on one workdir corrupt its checkpoints)"
    )

  with locks.held(path, busy):
    try:
      yield
    except BaseException:
      if created and os.listdir(workdir) == [LOCK_FILE]:  # failed before writing anything: leave no workdir
        os.remove(path)
        os.rmdir(workdir)
      raise
