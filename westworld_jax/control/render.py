"""Episode renderings: a video from MuJoCo's offscreen renderer, and a trajectory plot (no GL needed).

MuJoCo picks its OpenGL backend from MUJOCO_GL when `mujoco` is first imported (and an unusable
one, e.g. osmesa without libOSMesa, makes that import fail). The control CLI therefore probes the
backend first (experiment.select_gl: the MUJOCO_GL set, else egl, else osmesa; EGL with Mesa's
software driver works on a machine without a GPU) and, when none works, sets MUJOCO_GL=disabled and
writes the reason into summary.json instead of a video. When rendering fails anyway,
`render_video` raises RenderError saying so, and the caller writes the trajectory plot only.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from westworld_jax.errors import UserError


class RenderError(UserError, RuntimeError):
  """No usable OpenGL backend for MuJoCo's offscreen renderer; the message says what to try."""


def _camera(model: mujoco.MjModel, body: int) -> mujoco.MjvCamera:
  """A camera that follows `body` from the side (-y), framing the whole model."""
  cam = mujoco.MjvCamera()
  mujoco.mjv_defaultFreeCamera(model, cam)
  cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
  cam.trackbodyid = body
  cam.distance = 2.0 * float(model.stat.extent)
  cam.azimuth, cam.elevation = 90.0, -15.0
  return cam


def render_frames(
  model: mujoco.MjModel, qpos_tq: np.ndarray, body: int = 1, width: int = 320, height: int = 240
) -> np.ndarray:
  """uint8 [T, height, width, 3] frames of the qpos trajectory (kinematics only)."""
  try:
    renderer = mujoco.Renderer(model, height, width)
  except Exception as e:  # pylint: disable=broad-except  # GL setup errors come in many types
    gl = os.environ.get("MUJOCO_GL", "(unset: glfw, needs a display)")
    raise RenderError(
      f"MuJoCo's offscreen renderer is unavailable with MUJOCO_GL={gl}: {type(e).__name__}: {e}. Set "
      "MUJOCO_GL=egl (libEGL; Mesa's software EGL works without a GPU) or MUJOCO_GL=osmesa (libOSMesa) "
      "before starting Python; without either, only the trajectory plot is written."
    ) from e
  try:
    d = mujoco.MjData(model)
    cam = _camera(model, body)
    frames = []
    for q in qpos_tq:
      d.qpos[:] = q
      mujoco.mj_forward(model, d)
      renderer.update_scene(d, camera=cam)
      frames.append(renderer.render().copy())
    return np.stack(frames)
  finally:
    renderer.close()  # explicit: EGL contexts freed at interpreter exit print errors


def write_video(frames: np.ndarray, path_stem: str, fps: float) -> str:
  """MP4 (OpenCV) if possible, else GIF (Pillow); returns the path written."""
  h, w = frames.shape[1:3]
  try:
    import cv2  # pylint: disable=import-outside-toplevel

    path = path_stem + ".mp4"
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if writer.isOpened():
      for f in frames:
        writer.write(f[..., ::-1])  # RGB -> BGR
      writer.release()
      if os.path.getsize(path) > 0:
        return path
  except ImportError:
    pass
  from PIL import Image  # pylint: disable=import-outside-toplevel

  path = path_stem + ".gif"
  imgs = [Image.fromarray(f) for f in frames]
  imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=max(1, int(1000 / fps)), loop=0)
  return path


def render_video(
  task, qpos_tq: np.ndarray, path_stem: str, width: int = 320, height: int = 240, max_fps: float = 30.0
) -> str:
  """Renders a qpos trajectory [T, nq] of `task` (frames subsampled to <= max_fps); returns the path."""
  stride = max(1, int(round(1.0 / (task.dt * max_fps))))
  qpos = np.asarray(qpos_tq)[::stride]
  frames = render_frames(task.robot.model, qpos, task.robot.root_body_id, width, height)
  return write_video(frames, path_stem, 1.0 / (task.dt * stride))


def plot_trajectory(log, task, path: str, env: int = 0) -> str:
  """PNG: reward and every observation channel over time, for one environment of an EpisodeLog."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  t_obs = np.arange(log.obs.shape[0]) * task.dt
  t_act = np.arange(log.rewards.shape[0]) * task.dt
  names = [c.name for c in task.robot.obs_channels]
  n = len(names)
  fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
  axes[0].plot(t_act, log.rewards[:, env])
  axes[0].set_ylabel("reward")
  axes[0].set_title(f"{task.name} ({log.policy}), env {env}: return {log.returns[env]:.1f}")
  for c in range(n):
    axes[1].plot(t_obs, log.obs[:, env, c], lw=0.8, label=names[c] if n <= 12 else None)
  axes[1].set_ylabel("observations")
  if n <= 12:
    axes[1].legend(fontsize=6, ncol=3)
  axes[2].plot(t_act, log.ctrl[:, env], lw=0.8)
  axes[2].set_ylabel("controls")
  axes[2].set_xlabel("time (s)")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path
