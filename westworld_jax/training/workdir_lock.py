"""One training run per workdir: an exclusive advisory lock (flock) on <workdir>/.train.lock, held for the
whole run and released by the kernel when the process ends however it ends (no stale locks). Two runs on
one workdir would interleave checkpoints and metrics rows and leave steps that never restore."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

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
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
      raise WorkdirBusyError(
        f"{workdir} is in use by another training run ({holder}): wait for it to end or stop it, "
        "or train in another --workdir (two runs on one workdir corrupt its checkpoints)"
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
    try:
      yield
    except BaseException:
      if created and os.listdir(workdir) == [LOCK_FILE]:  # failed before writing anything: leave no workdir
        os.remove(path)
        os.rmdir(workdir)
      raise
  finally:
    os.close(fd)  # releases the lock
