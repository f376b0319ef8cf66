"""README's "Use a world model" as a user runs it: its two commands make hopper data in D4RL's
layout, its Python block loads the shipped model by name and predicts; the model must beat holding
the last observation on those held-out-robot episodes (hopper is not among its training robots)."""

import os
import re
import subprocess

import pytest
from tests.hang_guard import guard

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _section(title: str) -> str:
  with open(os.path.join(_ROOT, "README.md")) as f:
    text = f.read()
  start = text.index(f"## {title}\n")
  return text[start : text.index("\n## ", start + 1)]


@pytest.mark.timeout(600)
def test_readme_loads_the_shipped_model_and_beats_hold_last(tmp_path, monkeypatch, capsys):
  sec = _section("Use a world model")
  bash = re.search(r"```bash\n(.*?)```", sec, re.S).group(1)
  python = re.search(r"```python\n(.*?)```", sec, re.S).group(1)
  commands = [line for line in bash.splitlines() if line.strip() and not line.lstrip().startswith("#")]
  assert len(commands) == 2
  env = dict(os.environ, PYTHONPATH=_ROOT)
  for cmd in commands:
    cmd = cmd.replace("experiments/", os.path.join(_ROOT, "experiments") + "/")
    subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=guard(300))
  assert (tmp_path / "hopper.hdf5").exists()
  monkeypatch.chdir(tmp_path)  # the block as a user's script there (in this process: no second jax start)
  exec(compile(python, "README.md", "exec"), {})
  out = capsys.readouterr().out
  m = re.search(r"westworld-cpu ([\d.]+), holding the last observation ([\d.]+)", out)
  assert m, out
  model, hold = float(m.group(1)), float(m.group(2))
  assert model < hold, out
