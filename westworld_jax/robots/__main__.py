"""Command line: describe a robot, list the catalogue.

python -m westworld_jax.robots describe FILE_OR_NAME [--json]
python -m westworld_jax.robots list [--json] [--split pretrain|zero_shot|few_shot]
"""

from __future__ import annotations

import json
import sys

from absl import flags

from westworld_jax.robots import catalogue
from westworld_jax.robots.robot import RobotLoadError
from westworld_jax import cli


_USAGE = "usage: python -m westworld_jax.robots {describe FILE_OR_NAME | list} [--json]"


def _describe(target: str) -> int:
  try:
    r = catalogue.load(target)
  except (RobotLoadError, KeyError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  d = r.describe()
  if _JSON.value:
    print(json.dumps(d, indent=1))
    return 0
  print(f"{d['name']}  dt={d['dt']:.4f}s  source={d['source']}")
  print(f"bodies ({len(d['bodies'])}):  name / object pre in post")
  for b in d["bodies"]:
    print(f"  {b['name']:28s} {b['object']:2d} {b['pre']:3d} {b['in']:3d} {b['post']:3d}")
  for key in ("obs_channels", "act_channels"):
    print(f"{key} ({len(d[key])}):")
    for c in d[key]:
      print(f"  {c['name']:32s} {c['kind']:12s} {c['body']}")
  return 0


def _list() -> int:
  envs = [e for e in catalogue.environments() if _SPLIT.value in (None, e.split)]
  specs, summ = catalogue.robot_specs(), catalogue.summaries()  # cached: compiling every robot takes ~20 s
  rows = []
  for e in envs:
    spec, s = specs[e.robot], summ[e.robot]
    rows.append(
      {
        "name": e.name,
        "robot": e.robot,
        "behaviour": e.behaviour,
        "task": spec.task,
        "source": spec.source,
        "obs": s["obs"],
        "act": s["act"],
        "dt": s["dt"],
        "split": e.split,
        "tree": s["tree"],
      }
    )
  if _JSON.value:
    print(json.dumps(rows, indent=1))
    return 0
  print(f"{'environment':44s} {'split':9s} {'obs':>4s} {'act':>4s} {'dt':>7s}  source")
  for row in rows:
    print(f"{row['name']:44s} {row['split']:9s} {row['obs']:4d} {row['act']:4d} {row['dt']:7.4f}  {row['source']}")
  by_split = {s: sum(r["split"] == s for r in rows) for s in catalogue.SPLITS}
  trees = len({r["tree"] for r in rows if r["split"] == catalogue.PRETRAIN})
  print(f"\n{len(rows)} environments: {by_split}; {trees} distinct kinematic trees in pretraining")
  return 0


def main(argv: list[str]) -> int:
  if len(argv) >= 3 and argv[1] == "describe":
    return _describe(argv[2])
  if len(argv) == 2 and argv[1] == "list":
    return _list()
  print(_USAGE, file=sys.stderr)
  return 2


if __name__ == "__main__":
  _JSON = flags.DEFINE_bool("json", False, "Print JSON instead of a table.")
  _SPLIT = flags.DEFINE_enum("split", None, list(catalogue.SPLITS), "Only list this split.")
  cli.run(main)
