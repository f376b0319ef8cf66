"""Exclusive advisory locks (flock) on a file, for what two processes must not write at once: a
training workdir (training/workdir_lock.py), a corpus environment being collected or imported
(data/collect.py, data/importers.py). The kernel releases a lock when its process ends, however it
ends, so a lock is never stale; the file records the holder (pid, host, since) for messages."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from typing import Callable, Iterator

from absl import logging

from westworld_jax.errors import UserError


def holder(fd: int) -> str:
  return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"


@contextlib.contextmanager
def held(path: str, busy: Callable[[str], UserError] | None = None, what: str = "") -> Iterator[bool]:
  """Holds the lock file `path` for the block. Taken by another process: raises busy(holder) when given,
  else waits for it (warning once that it waits, `what` naming the work). Yields False, without a lock,
  where `path` cannot be created (a read-only directory: nothing else can write there either)."""
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
      yield False
      return
    raise
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if busy is not None:
        raise busy(holder(fd)) from None
      logging.warning("waiting for %s, which holds %s (%s)", holder(fd), path, what or "busy")
      fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    stamp = f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    os.pwrite(fd, stamp.encode(), 0)
    yield True
  finally:
    os.close(fd)  # releases the lock
