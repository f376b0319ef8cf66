"""Export a trained model for others to load by path (or ship it in the package, loaded by name):

  python -m westworld_jax.export --workdir workdirs/cpu/pretrain/westworld --out westworld_jax/pretrained/westworld-cpu \
      [--step N] [--card MODEL_CARD.md]

Writes the parameters alone (orbax, no optimizer state), the run's config and normalisation statistics
and, with --card, the model card (inference.export); `westworld_jax.load(OUT)` reads it.
"""

from absl import flags

from westworld_jax import cli
from westworld_jax.inference import export


def main(argv):
  del argv
  card = ""
  if _CARD.value:
    with open(_CARD.value) as f:
      card = f.read()
  info = export(_WORKDIR.value, _OUT.value, _STEP.value, card)
  print(f"exported step {info['step']} ({info['params']} parameters) of {_WORKDIR.value} to {_OUT.value}")


if __name__ == "__main__":
  _WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.", required=True)
  _OUT = flags.DEFINE_string("out", None, "Export directory (replaced whole).", required=True)
  _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest that restores).")
  _CARD = flags.DEFINE_string("card", "", "A model card (markdown) to include as MODEL_CARD.md.")
  cli.run(main)
