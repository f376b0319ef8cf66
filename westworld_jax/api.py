"""Load a world model and predict with it.

    import westworld_jax as ww
    model = ww.load("westworld-cpu")   # a model shipped in the package, or a training workdir
    future = model.predict("hopper", obs, act, future_act)

`robot` is a catalogue name, an MJCF/URDF path or a Robot. Arrays are in the robot's own units,
laid out as a trajectory (act[t] is the action taken at obs[t]): `obs` [..., T_h, Co] the last
observations (the current one last), `act` [..., T_h, Ca] the action taken at each of them,
`future_act` [..., T_f, Ca] the actions that continue them; the result [..., T_f, Co] is the T_f
observations they lead to. For an episode (obs [T, Co], act [T, Ca]) and a step t:
predict(robot, obs[t-h+1 : t+1], act[t-h+1 : t+1], act[t+1 : t+1+f]) predicts obs[t+1 : t+1+f]
(the last future action follows the last predicted observation and changes nothing). Leading axes
are batch axes. T_h may exceed the model's history (the last `model.history` steps are used).

Normalisation (the per-channel min-max the model reads, data/normalise.py): `data=(obs_all,
act_all)`, the user's trajectories of that robot ([..., Co] and [..., Ca]), as evaluation does;
without it, the checkpoint's statistics for a robot it trained on; else short simulated OU
rollouts of the robot, with a warning (a model's accuracy depends on the range it is given).
Control (control/backends.WorldModelBackend) builds its batches with the same model/batch.robot_batch;
evaluation batches windows through the data pipeline, and predicts the same (tests/test_evaluate.py).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

from absl import logging
import jax
import numpy as np

from westworld_jax.data import normalise, padding
from westworld_jax.errors import UserError
from westworld_jax.model.batch import robot_batch
from westworld_jax.training.run_files import EXPORT_FILE, RUN_FILE

# Models shipped in the package (westworld_jax/pretrained/<name>/, each an exported run: MODEL_CARD.md).
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


def shipped() -> list[str]:
  """Names of the models shipped in the package (`load(name)`)."""
  if not os.path.isdir(PRETRAINED_DIR):
    return []
  return sorted(d for d in os.listdir(PRETRAINED_DIR) if os.path.isfile(os.path.join(PRETRAINED_DIR, d, EXPORT_FILE)))


def load(name_or_path: str, step: int | None = None) -> "Model":
  """A shipped model by name (`shipped()`) or a training workdir (its newest checkpoint, or `step`)."""
  from westworld_jax import inference  # pylint: disable=import-outside-toplevel

  path = name_or_path
  if not os.path.isdir(path):
    if name_or_path not in shipped():
      raise UserError(
        f"no model '{name_or_path}': pass a training workdir (python -m westworld_jax.train --workdir DIR) "
        f"or a shipped model: {', '.join(shipped()) or 'none installed'}"
      )
    path = os.path.join(PRETRAINED_DIR, name_or_path)
  wm, params, stats, at = inference.load_for_inference(path, step, with_step=True)
  return Model(wm, params, stats or {}, os.path.abspath(path), at)


def read_episodes(path: str, robot) -> list[dict]:
  """Episodes {"obs" [T, Co], "act" [T, Ca]} of `robot`'s data: a D4RL-layout HDF5 (or .npz) file
  (`observations`, `actions` and episode ends `terminals` / `timeouts`, or `episode_ends`, as the
  importer reads them: data/importers.py; columns in the robot's channel order), or a corpus
  environment directory (e.g. corpus/mine/my_robot-ou from `collect --robot FILE`)."""
  from westworld_jax.data import importers, shards  # pylint: disable=import-outside-toplevel

  robot = _robot(robot)
  if os.path.isdir(path):
    meta = shards.verify_env(path)
    if meta["robot"]["name"] != robot.name or len(meta["robot"]["obs_channels"]) != robot.num_obs:
      raise UserError(f"{path} holds robot '{meta['robot']['name']}', not '{robot.name}'")
    return [
      {"obs": np.asarray(e["obs"], np.float32), "act": np.asarray(e["act"], np.float32)}
      for e in shards.read_episodes(path, meta=meta)
    ]
  return importers.split_episodes(importers.read_arrays(path), robot, path)


class Windows(NamedTuple):
  """Prediction windows cut from episodes (`windows`): inputs of Model.predict and the truth."""

  obs: np.ndarray  # [N, history, Co]
  act: np.ndarray  # [N, history, Ca]
  future_act: np.ndarray  # [N, horizon, Ca]
  future_obs: np.ndarray  # [N, horizon, Co]: what predict should return


def windows(episodes: Sequence[dict], history: int, horizon: int, stride: int = 1) -> Windows:
  """Every `stride`-th window of history + horizon steps inside each episode (none crosses an end)."""
  if history < 1 or horizon < 1 or stride < 1:
    raise UserError(f"history, horizon and stride must be >= 1, got {history}, {horizon}, {stride}")
  parts: list[tuple] = []
  for ep in episodes:
    obs, act = np.asarray(ep["obs"], np.float32), np.asarray(ep["act"], np.float32)
    for t in range(history - 1, len(obs) - horizon, stride):  # t: the current (last observed) step
      h = slice(t - history + 1, t + 1)
      f = slice(t + 1, t + 1 + horizon)
      parts.append((obs[h], act[h], act[f], obs[f]))
  if not parts:
    raise UserError(f"no episode is longer than history + horizon = {history + horizon} steps")
  return Windows(*(np.stack(x) for x in zip(*parts)))


def _robot(robot):
  if isinstance(robot, str):
    from westworld_jax.robots import catalogue  # pylint: disable=import-outside-toplevel

    return catalogue.load(robot)
  return robot


class Model:
  """A world model with its parameters and the normalisation it was trained with."""

  def __init__(self, world_model, params, data_stats: dict, source: str = "", step: int | None = None):
    self.world_model, self.params, self.data_stats = world_model, params, data_stats
    self.source, self.step = source, step
    self._predict = jax.jit(world_model.predict)
    self._normalisers: dict[str, normalise.Normaliser] = {}

  @property
  def name(self) -> str:
    return self.world_model.name

  @property
  def history(self) -> int:
    """Observed steps the model conditions on."""
    return int(self.world_model.history)

  @property
  def max_window_len(self) -> int:
    """history + the most steps it predicts at once."""
    return int(self.world_model.config.max_window_len)

  def __repr__(self) -> str:
    return f"Model({self.name}, history={self.history}, window={self.max_window_len}, source={self.source!r})"

  def finetune(
    self,
    robot,
    episodes: Sequence[dict],
    workdir: str,
    steps: int = 300,
    lr: float = 1e-4,
    batch_size: int = 8,
    val_fraction: float = 0.1,
    seed: int = 0,
  ) -> "Model":
    """This model fine-tuned on the robot's episodes ({"obs" [T, Co], "act" [T, Ca]}, e.g. read_episodes);
    returns the fine-tuned Model (normalised with these episodes' min-max).

    `workdir` gets the episodes as corpus environment corpus/<robot>-finetune (val_fraction of them
    held out, by episode: evaluate with `python -m westworld_jax.evaluate --checkpoint WORKDIR/run
    --config.corpus_dir=WORKDIR/corpus --config.environments="('<robot>-finetune',)" --config.require_unseen=False`)
    and the training
    run in run/ (training/finetune.py: this model's recipe and weights, a fresh optimizer, `steps` at
    `lr`). A rerun resumes that run."""
    from westworld_jax.data import importers  # pylint: disable=import-outside-toplevel
    from westworld_jax.training import finetune, loop  # pylint: disable=import-outside-toplevel

    robot = _robot(robot)
    if not os.path.exists(os.path.join(self.source, RUN_FILE)):
      raise UserError(f"{self.source} is not a training workdir or export: fine-tune a model loaded with load()")
    for i, ep in enumerate(episodes):
      _check_channels(f"episode {i}", np.shape(ep["obs"]), np.shape(ep["act"]), robot)
    corpus, env = os.path.join(workdir, "corpus"), f"{robot.name}-finetune"
    meta = importers.import_episodes(
      robot, list(episodes), corpus, env, "fine-tuning episodes", val_fraction=val_fraction, history=self.history
    )
    n_train = sum(not e["val"] for e in meta["episodes"])
    cfg = finetune.finetune_config(
      self.source, env=env, corpus_dir=os.path.abspath(corpus), episodes=n_train, steps=steps, lr=lr,
      batch_size=batch_size, seed=seed,
    )  # fmt: skip
    run = os.path.join(workdir, "run")
    result = loop.train(cfg, run)
    if result.stopped_early:
      raise UserError(f"fine-tuning stopped at step {result.step} of {steps}; call finetune again to resume it")
    return load(run)

  def normaliser(self, robot, data: tuple[Any, Any] | None = None) -> normalise.Normaliser:
    """The robot's min-max: from `data` (obs, act), else the checkpoint's, else OU rollouts (warned)."""
    robot = _robot(robot)
    if data is not None:
      obs_all, act_all = data
      _check_channels("data", np.shape(obs_all), np.shape(act_all), robot)
      try:
        stats = normalise.stats_of(obs_all, act_all)
      except ValueError as e:
        raise UserError(f"{e}") from None
      return normalise.Normaliser.from_stats(stats, robot.num_obs, robot.num_act, where="data")
    if robot.name not in self._normalisers:
      env, stats = normalise.pick_stats(self.data_stats, robot)
      if not stats:
        logging.warning(
          "%s never trained on robot '%s': normalising with short simulated OU rollouts; pass data=(obs, act) "
          "of your trajectories for the range the predictions should cover",
          self.name,
          robot.name,
        )
        env, stats = "OU rollouts", normalise.stats_from_rollouts(robot)
      self._normalisers[robot.name] = normalise.Normaliser.from_stats(
        stats, robot.num_obs, robot.num_act, where=f"stats of {env}"
      )
    return self._normalisers[robot.name]

  def predict(self, robot, obs, act, future_act, data: tuple[Any, Any] | None = None) -> np.ndarray:
    """Observations [..., T_f, Co] after `future_act`, in the robot's units (the module docstring)."""
    robot = _robot(robot)
    obs, act, fut = (np.asarray(x, np.float32) for x in (obs, act, future_act))
    _check_channels("obs / act", obs.shape, act.shape, robot)
    _check_channels("obs / future_act", obs.shape, fut.shape, robot)
    lead = obs.shape[:-2]
    if obs.ndim < 2 or act.shape[:-1] != obs.shape[:-1] or fut.shape[:-2] != lead:
      raise UserError(
        f"obs {obs.shape}, act {act.shape} and future_act {fut.shape} must be [..., T_h, Co], [..., T_h, Ca] "
        "and [..., T_f, Ca] with the same leading (batch) axes"
      )
    for name, x in (("obs", obs), ("act", act), ("future_act", fut)):
      if not np.isfinite(x).all():
        raise UserError(f"{name} holds NaN or inf: pass finite values")
    h, f = self.history, fut.shape[-2]
    if obs.shape[-2] < h:
      raise UserError(f"{self.name} conditions on {h} past steps: obs and act need T_h >= {h}, got {obs.shape[-2]}")
    self.world_model.check_robot_of(
      robot,
      f"robot '{robot.name}' ({h} history + {f} predicted steps)",
      "use a model of a larger {field} (or, for max_window_len, predict fewer steps at once)",
      window_len=h + f,
    )
    norm = self.normaliser(robot, data)
    obs_lo, obs_span = norm.obs_min, normalise.span(norm.obs_min, norm.obs_max)
    act_lo, act_span = norm.act_min, normalise.span(norm.act_min, norm.act_max)
    b = int(np.prod(lead, dtype=np.int64))
    obs = obs.reshape(b, -1, robot.num_obs)[:, -h:]
    acts = np.concatenate([act.reshape(b, -1, robot.num_act)[:, -h:], fut.reshape(b, f, robot.num_act)], axis=1)
    obs_w = np.zeros((b, h + f, robot.num_obs), np.float32)
    obs_w[:, :h] = normalise.normalise(obs, obs_lo, obs_span)
    act_w = normalise.normalise(acts, act_lo, act_span).astype(np.float32)
    structure = padding.padded_structure(
      robot.obs_struct(), robot.act_struct(), robot.obs_kinds(), robot.act_kinds(), robot.num_obs, robot.num_act
    )
    pred = self._predict(self.params, robot_batch(obs_w, act_w, structure))[:, h:]
    out = normalise.denormalise(np.clip(np.asarray(pred, np.float32), 0.0, 1.0), obs_lo, obs_span)
    return out.reshape(*lead, f, robot.num_obs)


def _check_channels(what: str, obs_shape, act_shape, robot) -> None:
  if not obs_shape or not act_shape or obs_shape[-1] != robot.num_obs or act_shape[-1] != robot.num_act:
    raise UserError(
      f"{what}: robot '{robot.name}' has {robot.num_obs} observation and {robot.num_act} action channels "
      f"({', '.join(c.name for c in robot.obs_channels)[:200]}), got arrays of shapes {tuple(obs_shape)} / {tuple(act_shape)}"
    )
