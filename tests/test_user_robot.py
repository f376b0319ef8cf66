"""A robot that is not in the catalogue, through README's "Your own robot" path: describe,
train_policy (saved under the model's name, not the file's path), collect --robot (every behaviour
that applies, the trained levels included; one that fails its checks is skipped), read its episodes
and predict them with the shipped model, fine-tune it on them and evaluate the held-out episodes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.hang_guard import guard

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CRAWLER = """<mujoco model="my_crawler">
  <option timestep="0.01"/>
  <worldbody>
    <geom name="floor" type="plane" size="20 20 0.1"/>
    <body name="torso" pos="0 0 0.2">
      <freejoint/>
      <geom type="box" size="0.15 0.08 0.04" mass="1"/>
      <body name="leg_l" pos="0.15 0 0">
        <joint name="hip_l" type="hinge" axis="0 1 0" range="-60 60"/>
        <geom type="capsule" fromto="0 0 0 0.12 0 -0.1" size="0.02"/>
      </body>
      <body name="leg_r" pos="-0.15 0 0">
        <joint name="hip_r" type="hinge" axis="0 1 0" range="-60 60"/>
        <geom type="capsule" fromto="0 0 0 -0.12 0 -0.1" size="0.02"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor joint="hip_l" gear="5" ctrlrange="-1 1"/>
    <motor joint="hip_r" gear="5" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


def _run(args, cwd, env):
  out = subprocess.run(
    [sys.executable, "-m"] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=guard(400)
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-3000:]
  return out


@pytest.mark.timeout(900)
def test_a_users_mjcf_from_policies_to_a_fine_tuned_model(tmp_path):
  (tmp_path / "my_crawler.xml").write_text(CRAWLER)
  env = dict(os.environ, PYTHONPATH=_ROOT, WESTWORLD_POLICY_DIR=str(tmp_path / "policies"))
  desc = json.loads(_run(["westworld_jax.robots", "describe", "my_crawler.xml", "--json"], tmp_path, env).stdout)
  assert desc["name"] == "my_crawler" and len(desc["act_channels"]) == 2
  _run(["westworld_jax.data.train_policy", "--robot", "./my_crawler.xml", "--steps", "6000"], tmp_path, env)
  assert sorted(os.listdir(tmp_path / "policies" / "my_crawler")) == ["expert", "medium", "random", "replay.npz"]
  data_cfg = os.path.join(_ROOT, "experiments", "data.py") + ":tiny"
  out = _run(
    ["westworld_jax.data.collect", "--config", data_cfg, "--robot", "my_crawler.xml", "--config.corpus_dir=corpus"],
    tmp_path,
    env,
  )
  made = sorted(os.listdir(tmp_path / "corpus"))
  assert {"my_crawler-ou", "my_crawler-gait", "my_crawler-policy_expert"} <= set(made)
  for b in ("mpc", "policy_replay"):  # may not suit this robot or this short run: skipped with a warning, not the end
    if f"my_crawler-{b}" not in made:
      assert f"skipped my_crawler-{b}" in out.stderr

  import westworld_jax as ww  # pylint: disable=import-outside-toplevel

  robot = str(tmp_path / "my_crawler.xml")
  episodes = ww.read_episodes(str(tmp_path / "corpus" / "my_crawler-policy_expert"), robot)
  episodes += ww.read_episodes(str(tmp_path / "corpus" / "my_crawler-ou"), robot)
  model = ww.load("westworld-cpu")  # zero-shot on the new robot
  w = ww.windows(episodes, model.history, 8, stride=40)
  data = tuple(np.concatenate([e[k] for e in episodes]) for k in ("obs", "act"))
  pred = model.predict(robot, w.obs, w.act, w.future_act, data=data)
  assert pred.shape == w.future_obs.shape and np.isfinite(pred).all()
  # README's fine-tuning and its evaluation: the held-out episodes only, beside holding the last observation
  from westworld_jax import config_files, evaluate  # pylint: disable=import-outside-toplevel

  wd = str(tmp_path / "workdirs" / "my_crawler")
  tuned = model.finetune(robot, episodes, wd, steps=2, batch_size=4)
  assert tuned.step == 2 and tuned.predict(robot, w.obs, w.act, w.future_act).shape == w.future_obs.shape
  cfg = config_files.load_sibling(os.path.join(_ROOT, "experiments", "zero_shot.py"), "zero_shot").get_config("tiny")
  cfg.corpus_dir, cfg.environments, cfg.require_unseen = os.path.join(wd, "corpus"), ("my_crawler-finetune",), False
  cfg.horizon, cfg.plot_windows = 8, 0
  res = evaluate.evaluate(cfg, [(None, os.path.join(wd, "run"))], str(tmp_path / "eval"))
  labels = [r["label"] for r in res["runs"]]
  assert (
    labels == ["westworld", "hold last obs (reference)"] and res["runs"][0]["envs"]["my_crawler-finetune"]["windows"]
  )
