"""One error boundary for every command-line entry point, and the commands' logging.

`run(main)` replaces `absl.app.run(main)`: the project's own errors (subclasses of `UserError`,
westworld_jax/errors.py, raised where bad input enters) print one line, `error: <message>`, and
exit with status 2; so does a --config.* flag that ml_collections cannot apply
(`error: bad command-line flag: <message>`). The full traceback is printed only when asked for,
with `--verbosity=1` (absl's flag) or `WESTWORLD_TRACEBACK=1` in the environment. Anything else
(a bug) keeps its traceback.

Logging, installed once when a command starts: warnings and errors, unless --verbosity is given
(--verbosity=0: every INFO log too); orbax's orphaned reports after a failed checkpoint read or
write are dropped (quiet_orbax_orphans).
"""

from __future__ import annotations

import logging as std_logging
import errno
import os
import sys
import warnings
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging

from westworld_jax import cache_dirs
from westworld_jax.errors import UserError

__all__ = ["UserError", "enable_compilation_cache", "project_logging", "quiet_orbax_orphans", "run", "wants_traceback"]

TRACEBACK_ENV = "WESTWORLD_TRACEBACK"
# What orbax's orphaned reads and writes say, and where they read or write (a step directory).
_ORPHANED = ("Encountered error while reading array index", "Event loop is closed", f"{os.sep}checkpoints")


def wants_traceback() -> bool:
  if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
    return True
  try:
    return flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].value >= 1
  except (KeyError, AttributeError):
    return False


def compilation_cache_dir() -> str:
  """Where every command (and the tests) keep compiled XLA programs: $JAX_COMPILATION_CACHE_DIR, else
  the project's cache (cache_dirs: $WESTWORLD_CACHE_DIR or ~/.cache/westworld_jax) /jit."""
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or cache_dirs.cache_dir("jit")


def enable_compilation_cache(path: str | None = None) -> None:
  """Persistent XLA cache: the runs of one experiment, and every command, share programs (compiles drop
  ~5x). Through JAX's environment variable when jax is not imported yet (control's commands pin their
  process to a core before jax loads), else its config."""
  path = path or compilation_cache_dir()
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_compilation_cache_dir", path)


def project_logging() -> None:
  """Quiet by default: warnings and errors only (commands show progress bars and print their
  summaries); --verbosity=0 shows every library's INFO logs, this project's included."""
  if flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present:
    return
  absl_logging.set_verbosity(absl_logging.WARNING)


def _orphaned(text: str, e=None) -> bool:
  text = f"{text} {e} {getattr(e, '__context__', '')} {getattr(e, '__cause__', '')}"
  return any(s in text for s in _ORPHANED)


def _keep_record(r) -> bool:
  exc = r.exc_info[1] if r.exc_info else None
  from_orbax = f"{os.sep}orbax{os.sep}" in r.pathname or r.name == "asyncio"
  return not (from_orbax and (exc is not None or r.levelno >= std_logging.ERROR) and _orphaned(r.getMessage(), exc))


def quiet_orbax_orphans() -> None:
  """A failed checkpoint restore or save is reported once, by the checkpoint module's error. orbax
  gives up at the first failed read or write and closes its event loop while the others are in
  flight; each of those then reports its own failure (unraisable exceptions, asyncio's 'exception
  was never retrieved', orbax's ERROR logs), hundreds of tracebacks, some only when garbage
  collected. Reports naming a checkpoint step directory, or in orbax's and asyncio's wording of
  those, are dropped (all are kept with --verbosity=1 or WESTWORLD_TRACEBACK=1)."""
  if wants_traceback():
    return
  hook = sys.unraisablehook
  if getattr(hook, "westworld_orphans", False):
    return

  def drop_orphaned(unraisable):
    if not _orphaned("", unraisable.exc_value):
      hook(unraisable)

  drop_orphaned.westworld_orphans = True
  sys.unraisablehook = drop_orphaned
  std_logging.getLogger("asyncio").addFilter(_keep_record)
  absl_logging.get_absl_handler().addFilter(_keep_record)
  warnings.filterwarnings("ignore", "coroutine '_read_array_index_and_device_put' was never awaited", RuntimeWarning)


def _one_line(e: BaseException) -> str:
  """The message of e (of the exception it wraps, when its only argument is one) on one line."""
  while len(e.args) == 1 and isinstance(e.args[0], BaseException):
    e = e.args[0]
  text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
  return " ".join(text.split())


def _flag_error(e: BaseException) -> str:
  """One line for absl's flag error: a config file's own exception (an unknown variant) instead of
  the traceback absl embeds, an unknown flag with where to look."""
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  head = lines[0].removeprefix("flag ").rstrip(":") if lines else str(e)
  if any(line.startswith("Traceback") for line in lines):
    cause = next((line for line in reversed(lines) if ": " in line and not line.startswith("File ")), lines[-1])
    kind, _, message = cause.partition(": ")
    head = head.replace(": Error whilst parsing config file", "")
    return f"{head}: {message if kind.isidentifier() else cause}"
  text = " ".join(lines).removeprefix("flag ")
  return f"{text} (--helpshort lists the flags)" if "Unknown command line flag" in text else text


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing; every flag error (an unknown flag, a config file that raises, e.g. for an unknown
  variant, ml_collections' --config.* overrides that do not apply) is one line and status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if wants_traceback():
      raise
    print(f"error: {_flag_error(e)}", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except
    if wants_traceback():
      raise
    print(f"error: bad command-line flag: {_one_line(e)}", file=sys.stderr)
    sys.exit(2)


def _guarded(main: Callable) -> Callable:
  def wrapped(argv):
    project_logging()  # quiet by default: INFO logs only with --verbosity
    quiet_orbax_orphans()
    try:
      return main(argv)
    except UserError as e:
      if wants_traceback():
        raise
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except OSError as e:
      advice = _DISK_ADVICE.get(e.errno)
      if advice is None or wants_traceback():
        raise
      where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f) or "a file of this run"
      print(f"error: {where}: {e.strerror or e}: {advice}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      if wants_traceback():
        raise
      print("interrupted (a training run saves on the first Ctrl-C; rerun the same command to resume)", file=sys.stderr)
      sys.exit(130)

  return wrapped


# OSErrors of the disk a command writes to: one line naming the path and what to do.
_DISK_ADVICE = {
  errno.ENOSPC: "the disk is full; free space (or use another --workdir / corpus_dir) and rerun to resume",
  errno.EDQUOT: "the disk quota is exceeded; free space and rerun to resume",
  errno.EROFS: "the filesystem is read-only; write to another --workdir / corpus_dir",
  errno.EACCES: "permission denied; write to a directory you own (another --workdir / corpus_dir)",
  errno.ENOTDIR: "a path there is a file, not a directory; choose another --workdir / corpus_dir",
  errno.EISDIR: "a directory stands where a file is expected; choose another path",
  errno.EEXIST: "a file stands where a directory is expected; choose another --workdir / corpus_dir",
}


def run(main: Callable) -> None:
  """absl.app.run(main) behind the error boundary, with the persistent compilation cache."""
  enable_compilation_cache()
  app.run(_guarded(main), flags_parser=_parse_flags)
