"""PPO (clipped surrogate, GAE) for behaviour policies, on data/rl_env.VecEnv.

The algorithm and defaults follow the common MuJoCo recipe (CleanRL's ppo_continuous_action):
tanh MLPs of 64 units for actor and critic, a state-independent log-std, observations normalised
by running mean/variance (clipped to +-10), rewards scaled by a running std of the discounted
return, 2048 steps per update from `num_envs` environments, 10 epochs of 32 minibatches, lr 3e-4
annealed linearly, clip 0.2, gamma 0.99, lambda 0.95, gradient norm 0.5. The simulator runs in C
(mujoco.rollout); the policy step and the whole update are jitted.

Deterministic by seed (environment noise, parameter init, sampling, minibatch order).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  total_steps: int = 1_000_000
  num_envs: int = 16
  steps_per_env: int = 128  # rollout length per update (num_envs * steps_per_env per update)
  epochs: int = 10
  minibatches: int = 32
  lr: float = 3e-4
  anneal_lr: bool = True
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip: float = 0.2
  vf_coef: float = 0.5
  ent_coef: float = 0.0
  max_grad_norm: float = 0.5
  hidden: tuple[int, ...] = (64, 64)
  init_log_std: float = 0.0
  obs_clip: float = 10.0
  reward_clip: float = 10.0


class ActorCritic(nn.Module):
  num_act: int
  hidden: tuple[int, ...] = (64, 64)
  init_log_std: float = 0.0

  @nn.compact
  def __call__(self, obs):
    def mlp(x, out, scale):
      for h in self.hidden:
        x = nn.tanh(nn.Dense(h, kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
      return nn.Dense(out, kernel_init=nn.initializers.orthogonal(scale))(x)

    mean = mlp(obs, self.num_act, 0.01)
    value = mlp(obs, 1, 1.0)[..., 0]
    log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.num_act,))
    return mean, log_std, value


class RunningMeanStd:
  """Running mean and variance (parallel Welford), as the usual MuJoCo PPO wrappers."""

  def __init__(self, shape, eps: float = 1e-4):
    self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), eps

  def update(self, x: np.ndarray) -> None:
    m, v, n = x.mean(0), x.var(0), len(x)
    delta, tot = m - self.mean, self.count + n
    self.mean = self.mean + delta * n / tot
    self.var = (self.var * self.count + v * n + delta**2 * self.count * n / tot) / tot
    self.count = tot

  def state(self) -> dict:
    return {"mean": self.mean.copy(), "var": self.var.copy(), "count": float(self.count)}

  def load(self, d: dict) -> None:
    self.mean, self.var, self.count = np.asarray(d["mean"]), np.asarray(d["var"]), float(d["count"])


def normalise_obs(obs, stats: dict, clip: float):
  return np.clip((obs - stats["mean"]) / np.sqrt(stats["var"] + 1e-8), -clip, clip).astype(np.float32)


def _log_prob(mean, log_std, a):
  return jnp.sum(-0.5 * ((a - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)


@dataclasses.dataclass
class Policy:
  """A trained policy: params, the observation statistics it was trained with, its network."""

  net: ActorCritic
  params: Any
  obs_stats: dict
  obs_clip: float = 10.0

  def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Actions in [-1, 1]: the mean (deterministic) or, with a NumPy generator, a sample of the
    policy's Gaussian."""
    mean, log_std, _ = jax.device_get(_apply(self.net, self.params, normalise_obs(obs, self.obs_stats, self.obs_clip)))
    if rng is not None:
      mean = mean + np.exp(log_std) * rng.standard_normal(mean.shape)
    return np.clip(np.asarray(mean, np.float64), -1.0, 1.0)


def _apply(net, params, obs):
  return _policy_fns(net)["apply"](params, obs)


_FNS: dict = {}


def _policy_fns(net: ActorCritic) -> dict:
  """Jitted functions of one network shape (cached: every call of a run reuses the compilation)."""
  k = (net.num_act, net.hidden, net.init_log_std)
  if k not in _FNS:
    apply = jax.jit(net.apply)

    @jax.jit
    def sample(params, obs, key):
      mean, log_std, value = net.apply(params, obs)
      a = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
      return a, _log_prob(mean, log_std, a), value

    _FNS[k] = {"apply": apply, "sample": sample}
  return _FNS[k]


def init_policy(num_obs: int, num_act: int, cfg: PPOConfig, seed: int = 0) -> Policy:
  """The untrained policy a run with this seed starts from (identity observation statistics)."""
  net = ActorCritic(num_act, tuple(cfg.hidden), cfg.init_log_std)
  _, k = jax.random.split(jax.random.PRNGKey(seed))
  params = net.init(k, jnp.zeros((1, num_obs), jnp.float32))
  return Policy(net, params, RunningMeanStd(num_obs).state(), cfg.obs_clip)


def _gae(rew, val, next_val, done, trunc_val, gamma, lam):
  """Advantages [T, n]: `done` ends the bootstrap; truncated steps bootstrap from their final obs."""
  T = len(rew)
  adv = np.zeros_like(rew)
  last = 0.0
  for t in reversed(range(T)):
    nv = next_val[t]
    target = rew[t] + gamma * np.where(done[t], 0.0, nv) + gamma * trunc_val[t]
    delta = target - val[t]
    last = delta + gamma * lam * np.where(done[t], 0.0, 1.0) * last
    adv[t] = last
  return adv


def make_update(net: ActorCritic, tx: optax.GradientTransformation, cfg: PPOConfig) -> Callable:
  def loss_fn(params, b):
    mean, log_std, value = net.apply(params, b["obs"])
    logp = _log_prob(mean, log_std, b["act"])
    ratio = jnp.exp(logp - b["logp"])
    adv = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
    pg = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip)).mean()
    vf = 0.5 * ((value - b["ret"]) ** 2).mean()
    ent = jnp.sum(log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e))
    return pg + cfg.vf_coef * vf - cfg.ent_coef * ent, {"pg": pg, "vf": vf, "kl": ((ratio - 1) - jnp.log(ratio)).mean()}

  @jax.jit
  def update(params, opt_state, batch, key):
    n = batch["obs"].shape[0]
    mb = n // cfg.minibatches

    def epoch(carry, k):
      params, opt_state = carry
      perm = jax.random.permutation(k, n)[: mb * cfg.minibatches].reshape(cfg.minibatches, mb)

      def minibatch(carry, idx):
        params, opt_state = carry
        (_, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, jax.tree.map(lambda x: x[idx], batch))
        upd, opt_state = tx.update(g, opt_state, params)
        return (optax.apply_updates(params, upd), opt_state), aux

      return jax.lax.scan(minibatch, (params, opt_state), perm)

    (params, opt_state), aux = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, cfg.epochs))
    return params, opt_state, jax.tree.map(lambda x: x[-1, -1], aux)

  return update


def evaluate(policy: Policy, env, episodes: int, deterministic: bool = True, seed: int = 0) -> dict:
  """Mean/std return and length over `episodes` whole episodes on env (its n copies in parallel),
  reseeded with `seed`: the same policy and seed give the same episodes."""
  env.reseed(seed)
  rng, rets, lens = np.random.default_rng(seed), [], []
  while len(rets) < episodes:  # rounds of one episode per copy (no bias toward short episodes)
    obs, live = env.reset(), np.ones(env.n, bool)
    ret, length = np.zeros(env.n), np.zeros(env.n, np.int64)
    while live.any():
      obs, r, term, trunc, _ = env.step(policy.act(obs, None if deterministic else rng))
      ret += r * live
      length += live
      ended = live & (term | trunc)
      rets += list(ret[ended])
      lens += list(length[ended])
      live &= ~ended
  rets, lens = np.array(rets[:episodes]), np.array(lens[:episodes])
  return {
    "return_mean": float(rets.mean()),
    "return_std": float(rets.std()),
    "episodes": int(len(rets)),
    "length_mean": float(lens.mean()),
  }


def train(
  env, cfg: PPOConfig, seed: int = 0, progress: bool = True, callback: Callable[[int, Policy, dict], None] | None = None
) -> tuple[Policy, list[dict]]:
  """Trains a policy on env (a VecEnv with cfg.num_envs copies). Returns (policy, log rows).

  callback(step, policy, row) runs after every update (e.g. checkpoints).
  """
  if env.n != cfg.num_envs:
    raise ValueError(f"the environment has {env.n} copies, cfg.num_envs={cfg.num_envs}")
  key = jax.random.PRNGKey(seed)
  key, _ = jax.random.split(key)
  start = init_policy(env.num_obs, env.num_act, cfg, seed)
  net, params = start.net, start.params
  per_update = cfg.num_envs * cfg.steps_per_env
  updates = max(1, cfg.total_steps // per_update)
  sched = optax.linear_schedule(cfg.lr, 0.0, updates * cfg.epochs * cfg.minibatches) if cfg.anneal_lr else cfg.lr
  tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(sched, eps=1e-5))
  opt_state = tx.init(params)
  update = make_update(net, tx, cfg)
  fns = _policy_fns(net)
  obs_rms, ret_rms = RunningMeanStd(env.num_obs), RunningMeanStd(())
  disc_ret = np.zeros(env.n)
  raw = env.reset()
  obs_rms.update(raw)
  ep_ret, ep_len, done_eps, rows = np.zeros(env.n), np.zeros(env.n, np.int64), [], []
  bar = tqdm.tqdm(total=updates * per_update, desc="ppo", unit="step", disable=not progress, mininterval=2)
  t0 = time.perf_counter()
  T, n = cfg.steps_per_env, env.n
  for u in range(updates):
    buf = {
      k: np.zeros((T, n) + s, np.float32)
      for k, s in (
        ("obs", (env.num_obs,)),
        ("act", (env.num_act,)),
        ("logp", ()),
        ("val", ()),
        ("rew", ()),
        ("next_val", ()),
        ("trunc_val", ()),
      )
    }
    buf["done"] = np.zeros((T, n), bool)
    stats = obs_rms.state()
    o = normalise_obs(raw, stats, cfg.obs_clip)
    for t in range(T):
      key, k = jax.random.split(key)
      a, logp, val = jax.device_get(fns["sample"](params, o, k))
      raw, r, term, trunc, final = env.step(np.asarray(a))
      obs_rms.update(raw)
      disc_ret = disc_ret * cfg.gamma + r
      ret_rms.update(disc_ret)
      disc_ret[term | trunc] = 0.0
      r_scaled = np.clip(r / np.sqrt(ret_rms.var + 1e-8), -cfg.reward_clip, cfg.reward_clip)
      buf["obs"][t], buf["act"][t], buf["logp"][t], buf["val"][t] = o, a, logp, val
      buf["rew"][t], buf["done"][t] = r_scaled, term | trunc
      if trunc.any():  # a time limit is not a terminal state: bootstrap from the final observation
        fv = np.asarray(fns["apply"](params, normalise_obs(final, stats, cfg.obs_clip))[2])
        buf["trunc_val"][t] = np.where(trunc, fv, 0.0)
      o = normalise_obs(raw, stats, cfg.obs_clip)
      ep_ret += r
      ep_len += 1
      for j in np.flatnonzero(term | trunc):
        done_eps.append((ep_ret[j], ep_len[j]))
        ep_ret[j], ep_len[j] = 0.0, 0
    last_val = np.asarray(fns["apply"](params, o)[2])
    buf["next_val"][:-1], buf["next_val"][-1] = buf["val"][1:], last_val
    adv = _gae(buf["rew"], buf["val"], buf["next_val"], buf["done"], buf["trunc_val"], cfg.gamma, cfg.gae_lambda)
    batch = {
      "obs": buf["obs"].reshape(T * n, -1),
      "act": buf["act"].reshape(T * n, -1),
      "logp": buf["logp"].reshape(-1),
      "adv": adv.reshape(-1),
      "ret": (adv + buf["val"]).reshape(-1),
    }
    key, k = jax.random.split(key)
    params, opt_state, aux = update(params, opt_state, batch, k)
    recent = done_eps[-20:]
    row = {
      "step": (u + 1) * per_update,
      "return": float(np.mean([e[0] for e in recent])) if recent else None,
      "length": float(np.mean([e[1] for e in recent])) if recent else None,
      "seconds": time.perf_counter() - t0,
      **{k: float(v) for k, v in jax.device_get(aux).items()},
    }
    rows.append(row)
    bar.update(per_update)
    if row["return"] is not None:
      bar.set_postfix(ret=f"{row['return']:.0f}", len=f"{row['length']:.0f}")
    if callback is not None:
      callback(row["step"], Policy(net, params, obs_rms.state(), cfg.obs_clip), row)
  bar.close()
  return Policy(net, params, obs_rms.state(), cfg.obs_clip), rows
