"""The search engine of the AJPQ mode: a small DDPG agent (HAQ / AMC style) in plain torch.

For each layer of a network, in order, the agent sees a state vector and picks a continuous
action in ``[0, 1]^action_dim`` (e.g. a bit-width and a keep ratio, mapped by the caller). One
reward is known only after the whole episode, so every step of the episode is credited with
it (``discount=0``, as HAQ does), minus a moving-average baseline that reduces the variance
of the critic's targets.

Because the steps share one reward, the value of a step's action depends on what the policy
does at the other steps. Transitions from much older policies therefore mislead the critic:
near the current policy's actions it sees the high rewards of recent episodes, elsewhere the
low ones of early, random episodes, so its maximum follows the policy wherever it is and the
search stalls. Keep the replay buffer to a few dozen episodes (``buffer_size`` of about 50
episodes' steps: the default 4096 suits networks of ~80 layers) and subtract the baseline when
a batch is drawn (one baseline for every transition, as HAQ and AMC do), not when it is stored.

The agent is tiny and lives on the CPU in float32, whatever device the model being compressed
is on. All of its randomness comes from its own ``torch.Generator`` and
``numpy.random.Generator`` (seeded from ``seed``), so it never disturbs the global RNG state
of the training run it searches for, and :meth:`DdpgAgent.state_dict` captures them so that a
resumed search continues exactly where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geta.errors import CheckpointError, ConfigError

__all__ = ["AgentConfig", "DdpgAgent"]

_FORMAT = 1  # version of DdpgAgent.state_dict's layout
_OUT_INIT = 3e-3  # DDPG's small output-layer init: the first actions sit near 0.5, Q near 0


@dataclass(frozen=True)
class AgentConfig:
    """Settings of :class:`DdpgAgent` (plain values, so ``dataclasses.asdict`` serializes it).

    - ``hidden``: width of the two hidden layers of the actor and of the critic.
    - ``actor_lr``, ``critic_lr``: Adam learning rates.
    - ``batch_size``: transitions per gradient step (sampled uniformly, with replacement).
    - ``buffer_size``: transitions kept; the oldest are dropped first. About 50 episodes'
      worth of steps works best (see the module docstring: stale transitions stall the
      search).
    - ``warmup_episodes``: episodes of uniform random actions before the actor acts; nothing
      is learned before the last of them ends.
    - ``noise``, ``noise_decay``: std of the Gaussian exploration noise added to the actor's
      action after warm-up (actions are clipped to ``[0, 1]``), multiplied by ``noise_decay``
      after each post-warm-up episode.
    - ``updates_per_episode``: gradient steps after each episode; ``0`` = as many as the
      episode had steps.
    - ``tau``: soft target-network update, ``target += tau * (online - target)`` per step.
    - ``discount``: ``0`` credits every transition with the episode's reward alone (HAQ);
      ``1`` would sum the rewards along the rest of the episode.
    - ``baseline_decay``: decay of the moving average of episode rewards that is subtracted
      from the sampled rewards (HAQ's variance reduction; it starts at the first reward).
    - ``actor_lr`` below ``critic_lr`` (DDPG's and HAQ's 1e-4 vs 1e-3) keeps the actor from
      chasing a critic that has seen little data into a saturated sigmoid in the first
      post-warm-up episodes.

    The defaults aim at searches of dozens of layers over hundreds of episodes. A 5-step,
    2-action synthetic search (tests/optim/ajpq/test_agent.py) gets within 2% of its optimum
    in 200 episodes with ``buffer_size=250, warmup_episodes=20, noise_decay=0.98,
    actor_lr=3e-4``; with the defaults (every episode kept) its best reward stalls at 0.8-0.93.

    Example:
        >>> AgentConfig(hidden=64, warmup_episodes=20).batch_size
        64
    """

    hidden: int = 128
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    batch_size: int = 64
    buffer_size: int = 4096
    warmup_episodes: int = 10
    noise: float = 0.5
    noise_decay: float = 0.95
    updates_per_episode: int = 0
    tau: float = 0.01
    discount: float = 0.0
    baseline_decay: float = 0.95

    def __post_init__(self) -> None:
        for name, low in (
            ("hidden", 1),
            ("batch_size", 1),
            ("buffer_size", 1),
            ("warmup_episodes", 0),
            ("updates_per_episode", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ConfigError(f"AgentConfig.{name} is an integer, got {value!r}")
            if value < low:
                raise ConfigError(f"AgentConfig.{name} must be at least {low}, got {value}")
            object.__setattr__(self, name, int(value))  # plain values (numpy ints come in)
        if self.buffer_size < self.batch_size:
            raise ConfigError(
                f"AgentConfig.buffer_size ({self.buffer_size}) is smaller than batch_size "
                f"({self.batch_size}): the agent would never hold a batch to learn from"
            )
        for name, low, high, open_low in (
            ("actor_lr", 0.0, math.inf, True),
            ("critic_lr", 0.0, math.inf, True),
            ("noise", 0.0, math.inf, False),
            ("noise_decay", 0.0, 1.0, True),
            ("tau", 0.0, 1.0, True),
            ("discount", 0.0, 1.0, False),
            ("baseline_decay", 0.0, 1.0, False),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(
                value, int | float | np.integer | np.floating
            ):
                raise ConfigError(f"AgentConfig.{name} is a number, got {value!r}")
            too_low = value <= low if open_low else value < low
            if not math.isfinite(value) or too_low or value > high:
                span = f"{'(' if open_low else '['}{low:g}, {high:g}]"
                if high == math.inf:
                    span = f"{'> ' if open_low else '>= '}{low:g}"
                raise ConfigError(f"AgentConfig.{name} must be in {span}, got {value}")
            object.__setattr__(self, name, float(value))


def _linear(n_in: int, n_out: int, bound: float | None, generator: torch.Generator) -> nn.Linear:
    """A linear layer initialised from ``generator`` alone (the global RNG is not touched):
    uniform in ``+-bound``, or ``+-1/sqrt(n_in)`` (torch's default range) when ``None``."""
    layer = torch.nn.utils.skip_init(nn.Linear, n_in, n_out)
    bound = 1.0 / math.sqrt(n_in) if bound is None else bound
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.uniform_(-bound, bound, generator=generator)
    return layer


def _mlp(n_in: int, hidden: int, n_out: int, generator: torch.Generator) -> nn.Sequential:
    return nn.Sequential(
        _linear(n_in, hidden, None, generator),
        nn.ReLU(),
        _linear(hidden, hidden, None, generator),
        nn.ReLU(),
        _linear(hidden, n_out, _OUT_INIT, generator),
    )


class _Actor(nn.Module):
    """``state -> hidden -> hidden -> action`` with ReLU and a sigmoid output in ``(0, 1)``."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int, g: torch.Generator) -> None:
        super().__init__()
        self.net = _mlp(state_dim, hidden, action_dim, g)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(state))


class _Critic(nn.Module):
    """``Q(state, action)``: the two inputs concatenated, ``-> hidden -> hidden -> 1``."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int, g: torch.Generator) -> None:
        super().__init__()
        self.net = _mlp(state_dim + action_dim, hidden, 1, g)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([state, action], dim=1)).squeeze(1)


def _soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.lerp_(o, tau)


class DdpgAgent:
    """DDPG (Lillicrap et al.) as HAQ and AMC use it to search per-layer compression settings.

    An episode walks the layers in order: at each layer call :meth:`act` with the layer's
    state (normalised by the caller) and apply the action; when the episode's reward is known
    call :meth:`end_episode` with the states and actions seen. The first
    ``warmup_episodes`` act uniformly at random; later ones follow the actor plus Gaussian
    noise whose std decays after each episode. :meth:`greedy` is the actor's action without
    noise (the policy to keep once the search is over).

    Example:
        >>> agent = DdpgAgent(state_dim=3, action_dim=1, config=AgentConfig(warmup_episodes=2))
        >>> for _ in range(4):
        ...     states, actions = [], []
        ...     for layer in range(5):
        ...         s = np.array([layer / 4, 1.0, 0.0])
        ...         states.append(s)
        ...         actions.append(agent.act(s))
        ...     stats = agent.end_episode(states, actions, reward=-float(np.mean(actions)))
        >>> agent.episodes, sorted(stats)
        (4, ['actor_loss', 'baseline', 'critic_loss', 'noise'])
        >>> 0.0 <= float(agent.greedy(np.zeros(3))[0]) <= 1.0
        True
    """

    def __init__(
        self, state_dim: int, action_dim: int, config: AgentConfig | None = None, seed: int = 0
    ) -> None:
        if state_dim < 1 or action_dim < 1:
            raise ConfigError(
                f"state_dim and action_dim must be at least 1, got {state_dim} and {action_dim}"
            )
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        self.config = config if config is not None else AgentConfig()
        self.seed = int(seed)
        c = self.config
        self._torch_rng = torch.Generator().manual_seed(self.seed)
        self._np_rng = np.random.default_rng(self.seed)
        g = self._torch_rng
        self.actor = _Actor(self.state_dim, self.action_dim, c.hidden, g)
        self.critic = _Critic(self.state_dim, self.action_dim, c.hidden, g)
        self.actor_target = _Actor(self.state_dim, self.action_dim, c.hidden, g)
        self.critic_target = _Critic(self.state_dim, self.action_dim, c.hidden, g)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for target in (self.actor_target, self.critic_target):
            target.requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(
            self.actor.parameters(), lr=c.actor_lr, foreach=True
        )
        self.critic_optimizer = torch.optim.Adam(
            self.critic.parameters(), lr=c.critic_lr, foreach=True
        )
        # replay buffer: a ring of the last buffer_size transitions
        n = c.buffer_size
        self._states = torch.zeros(n, self.state_dim)
        self._actions = torch.zeros(n, self.action_dim)
        self._rewards = torch.zeros(n)
        self._next_states = torch.zeros(n, self.state_dim)
        self._dones = torch.zeros(n)
        self._position = 0  # where the next transition goes
        self._size = 0  # transitions held
        self.baseline = math.nan  # moving average of episode rewards; nan before the first
        self.noise = float(c.noise)  # std of the exploration noise of the next episodes
        self.episodes = 0  # finished episodes

    # ---- acting ---------------------------------------------------------------------------

    def _state_tensor(self, state: np.ndarray) -> torch.Tensor:
        s = np.asarray(state, dtype=np.float32)
        if s.shape != (self.state_dim,):
            raise ValueError(f"a state is a vector of {self.state_dim} values, got shape {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError(f"a state must be finite, got {s}")
        return torch.from_numpy(s).unsqueeze(0)

    @property
    def warming_up(self) -> bool:
        """Whether the current episode is a warm-up one (uniform random actions)."""
        return self.episodes < self.config.warmup_episodes

    def greedy(self, state: np.ndarray) -> np.ndarray:
        """The actor's action for ``state``, without noise: float64 in ``[0, 1]^action_dim``."""
        with torch.no_grad():
            action = self.actor(self._state_tensor(state))[0]
        return action.numpy().astype(np.float64)

    def act(self, state: np.ndarray) -> np.ndarray:
        """The exploring action for ``state`` in the current episode: uniform random during
        warm-up, afterwards the actor's action plus Gaussian noise of std :attr:`noise`,
        clipped to ``[0, 1]``. Float64, shape ``(action_dim,)``."""
        if self.warming_up:
            self._state_tensor(state)  # same checks as after warm-up
            return self._np_rng.random(self.action_dim)
        action = self.greedy(state) + self.noise * self._np_rng.standard_normal(self.action_dim)
        return np.clip(action, 0.0, 1.0)

    # ---- learning -------------------------------------------------------------------------

    def end_episode(
        self, states: list[np.ndarray], actions: list[np.ndarray], reward: float
    ) -> dict[str, float]:
        """Record a finished episode and learn from the replay buffer.

        Stores one transition per step ``(state, action, reward, next state, done)`` (done on
        the last step) and updates the reward baseline (the moving average of episode
        rewards). Once warm-up is over (from the end of the last warm-up episode on) and the
        buffer holds a batch, runs ``updates_per_episode`` gradient steps (``0``: one per step
        of the episode) on sampled batches: the critic regresses
        ``(r - baseline) + discount * (1 - done) * Q'(s', mu'(s'))``, the actor maximises
        ``Q(s, mu(s))``, and the target networks follow softly. The baseline is subtracted at
        sampling time, so every transition is measured against the same, current baseline
        (a baseline frozen at storage time would make recent, better episodes look no better
        than old random ones). The noise std decays after each post-warm-up episode.

        Returns ``critic_loss`` and ``actor_loss`` (means over this episode's gradient steps;
        nan when none ran), ``noise`` (the std the next episode uses) and ``baseline``.
        """
        if len(states) != len(actions) or not states:
            raise ValueError(
                f"an episode has as many states as actions and at least one step, got "
                f"{len(states)} states and {len(actions)} actions"
            )
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"the episode's reward must be finite, got {reward}")
        s = torch.cat([self._state_tensor(x) for x in states])
        a = torch.as_tensor(np.stack([np.asarray(x, dtype=np.float32) for x in actions]))
        if a.shape != (len(actions), self.action_dim):
            raise ValueError(
                f"an action is a vector of {self.action_dim} values, got shape {tuple(a.shape[1:])}"
            )
        if not torch.isfinite(a).all():
            raise ValueError("the episode's actions must be finite")
        c = self.config
        if math.isnan(self.baseline):
            self.baseline = reward
        n = len(states)
        done = torch.zeros(n)
        done[-1] = 1.0
        next_s = torch.cat([s[1:], s[-1:]])  # the last one is masked by done
        self._store(s, a, torch.full((n,), reward), next_s, done)
        self.baseline = c.baseline_decay * self.baseline + (1.0 - c.baseline_decay) * reward

        critic_losses: list[float] = []
        actor_losses: list[float] = []
        if self.episodes + 1 >= c.warmup_episodes and self._size >= c.batch_size:
            for _ in range(c.updates_per_episode or n):
                critic_loss, actor_loss = self._update()
                critic_losses.append(critic_loss)
                actor_losses.append(actor_loss)
        if not self.warming_up:
            self.noise *= c.noise_decay
        self.episodes += 1
        return {
            "critic_loss": float(np.mean(critic_losses)) if critic_losses else math.nan,
            "actor_loss": float(np.mean(actor_losses)) if actor_losses else math.nan,
            "noise": self.noise,
            "baseline": self.baseline,
        }

    def _store(
        self,
        s: torch.Tensor,
        a: torch.Tensor,
        r: torch.Tensor,
        next_s: torch.Tensor,
        done: torch.Tensor,
    ) -> None:
        size = self.config.buffer_size
        for i in range(len(s)):
            p = self._position
            self._states[p], self._actions[p], self._rewards[p] = s[i], a[i], r[i]
            self._next_states[p], self._dones[p] = next_s[i], done[i]
            self._position = (p + 1) % size
            self._size = min(self._size + 1, size)

    def _update(self) -> tuple[float, float]:
        """One critic step, one actor step and a soft target update on a sampled batch."""
        c = self.config
        idx = torch.from_numpy(self._np_rng.integers(0, self._size, c.batch_size))
        s, a, r = self._states[idx], self._actions[idx], self._rewards[idx] - self.baseline
        target = r
        if c.discount > 0:
            next_s, done = self._next_states[idx], self._dones[idx]
            with torch.no_grad():
                next_q = self.critic_target(next_s, self.actor_target(next_s))
            target = r + c.discount * (1.0 - done) * next_q
        critic_loss = F.mse_loss(self.critic(s, a), target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        actor_loss = -self.critic(s, self.actor(s)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        # the actor's step left gradients on the critic: drop them (the next step zeroes them
        # anyway, but they should not sit in the state a checkpoint sees)
        self.critic_optimizer.zero_grad(set_to_none=True)

        _soft_update(self.actor_target, self.actor, c.tau)
        _soft_update(self.critic_target, self.critic, c.tau)
        return critic_loss.item(), actor_loss.item()

    # ---- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: networks, targets, optimizers, the replay
        buffer, baseline, noise, episode count and both RNG states. Only tensors and plain
        Python values, so ``torch.save`` + ``torch.load(..., weights_only=True)`` round-trips
        it."""
        n = self._size
        return {
            "format": _FORMAT,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "config": asdict(self.config),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "buffer": {
                "states": self._states[:n].clone(),
                "actions": self._actions[:n].clone(),
                "rewards": self._rewards[:n].clone(),
                "next_states": self._next_states[:n].clone(),
                "dones": self._dones[:n].clone(),
                "position": self._position,
                "size": n,
            },
            "baseline": self.baseline,
            "noise": self.noise,
            "episodes": self.episodes,
            "torch_rng": self._torch_rng.get_state(),
            "numpy_rng": self._np_rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output. The agent must have the same dimensions and
        config as the one that saved it; a mismatch raises
        :class:`~geta.errors.CheckpointError`."""
        if state.get("format") != _FORMAT:
            raise CheckpointError(
                f"agent state of format {state.get('format')!r}, this version reads {_FORMAT}"
            )
        dims = (state["state_dim"], state["action_dim"])
        if dims != (self.state_dim, self.action_dim):
            raise CheckpointError(
                f"the saved agent has state_dim, action_dim = {dims}, this one "
                f"{(self.state_dim, self.action_dim)}"
            )
        ours = asdict(self.config)
        differ = [
            f.name for f in fields(AgentConfig) if state["config"].get(f.name) != ours[f.name]
        ]
        if differ:
            diffs = ", ".join(f"{k}: {state['config'].get(k)!r} vs {ours[k]!r}" for k in differ)
            raise CheckpointError(
                f"the saved agent's config differs from this one's (saved vs this): {diffs}"
            )
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        buffer = state["buffer"]
        n = int(buffer["size"])
        for name in ("states", "actions", "rewards", "next_states", "dones"):
            ours_t = getattr(self, f"_{name}")
            ours_t.zero_()
            ours_t[:n] = buffer[name]
        self._size = n
        self._position = int(buffer["position"])
        self.baseline = float(state["baseline"])
        self.noise = float(state["noise"])
        self.episodes = int(state["episodes"])
        self._torch_rng.set_state(state["torch_rng"])
        self._np_rng.bit_generator.state = state["numpy_rng"]
