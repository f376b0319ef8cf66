"""One error boundary for every command-line entry point.

`run(main)` replaces `absl.app.run(main)`: the project's own errors (subclasses of `UserError`,
raised where bad input enters) and a few well-known input errors print one line,
`error: <message>`, and exit with status 2. The full traceback is printed only when asked for,
with `--verbosity=1` (absl's flag) or `WESTWORLD_TRACEBACK=1` in the environment. Anything else
(a bug) keeps its traceback. Logging is the project's INFO and everyone's warnings, unless
--verbosity is given (training/logs.py: project_logging).
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags

TRACEBACK_ENV = "WESTWORLD_TRACEBACK"


class UserError(Exception):
  """Base of every project error whose message tells the user what to do.

  Subclasses also derive from the builtin that fits (ValueError, FloatingPointError, ...), so
  callers that catch those keep working.
  """


def wants_traceback() -> bool:
  if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
    return True
  try:
    return flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].value >= 1
  except (KeyError, AttributeError):
    return False


def enable_compilation_cache(path: str | None = None) -> None:
  """Persistent XLA cache: the many runs of one experiment share programs (compiles drop ~5x)."""
  import jax  # pylint: disable=import-outside-toplevel

  path = (
    path
    or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    or os.path.join(os.path.expanduser("~"), ".cache", "westworld_jax_jit")
  )
  jax.config.update("jax_compilation_cache_dir", path)


def _guarded(main: Callable) -> Callable:
  def wrapped(argv):
    from westworld_jax.training import logs

    logs.project_logging()  # quiet by default: other libraries' INFO logs only with --verbosity
    try:
      return main(argv)
    except UserError as e:
      if wants_traceback():
        raise
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapped


def run(main: Callable) -> None:
  """absl.app.run(main) behind the error boundary."""
  try:
    app.run(_guarded(main))
  except Exception as e:  # pylint: disable=broad-except
    # ml_collections' --config.* flags fail with a plain AttributeError/KeyError/ValueError while
    # absl parses them (absl reports only its own flags.Error cleanly).
    if flags.FLAGS.is_parsed() or wants_traceback():
      raise
    text = " ".join(str(e).replace("\\n", " ").replace("'", "").replace("\\", "").split())
    print(f"error: bad command-line flag: {text}", file=sys.stderr)
    sys.exit(2)
