"""The project's error base: every error for bad input derives from `UserError` (raised where the
input enters); the commands' boundary (cli.py) prints its message as one line."""


class UserError(Exception):
  """Base of every project error whose message tells the user what to do.

  Subclasses also derive from the builtin that fits (ValueError, FloatingPointError, ...), so
  callers that catch those keep working.
  """


class Interrupted(UserError):
  """A run stopped (a signal, or max_steps_per_run) before it finished; rerunning the same command resumes it."""


class ConfigError(UserError, ValueError):
  """A config field has a value the run (its model, data or mesh) cannot use; the message names the field."""
