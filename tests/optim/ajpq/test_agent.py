"""The AJPQ search's DDPG agent: it finds a known optimum, is deterministic from its seed
without touching the global RNGs, resumes exactly from a checkpoint, and checks its config."""

from __future__ import annotations

import dataclasses
import doctest
import math

import numpy as np
import pytest
import torch

from geta.errors import CheckpointError, ConfigError
from geta.optim.ajpq import agent as agent_module
from geta.optim.ajpq.agent import AgentConfig, DdpgAgent

# The synthetic search: 5 steps ("layers") per episode, 2 actions per step, one reward per
# episode, 1 - 4 * mean squared distance to fixed targets (optimum 1.0 at the targets).
TARGETS = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.9], [0.1, 0.4], [0.85, 0.6]])
STEPS, ACTIONS = TARGETS.shape
STATE = STEPS + ACTIONS  # one-hot step index + the previous step's action


def _state(step: int, previous: np.ndarray) -> np.ndarray:
    s = np.zeros(STATE)
    s[step] = 1.0
    s[STEPS:] = previous
    return s


def _episode(policy) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    states, actions, previous = [], [], np.zeros(ACTIONS)
    for step in range(STEPS):
        s = _state(step, previous)
        previous = policy(s)
        states.append(s)
        actions.append(previous)
    reward = 1.0 - 4.0 * float(np.mean((np.array(actions) - TARGETS) ** 2))
    return states, actions, reward


# A buffer of ~50 episodes (the steps share the reward, so stale transitions stall the
# critic), an actor slower than the critic, 20 random episodes and a noise decaying over
# ~100 episodes. Seeds 0..9 locally: best reward 0.982..0.997 (first >= 0.97 by episode 67..166),
# greedy mean abs error 0.030..0.058 after 200 episodes.
SEARCH = AgentConfig(buffer_size=250, warmup_episodes=20, noise_decay=0.98, actor_lr=3e-4)
EPISODES = 200

# small and quick, for the bookkeeping tests
TINY = AgentConfig(hidden=16, batch_size=8, buffer_size=32, warmup_episodes=3, noise_decay=0.9)


def _run(agent: DdpgAgent, episodes: int) -> tuple[list[np.ndarray], list[dict[str, float]]]:
    """``episodes`` exploring episodes; every action taken and every end_episode result."""
    actions, stats = [], []
    for _ in range(episodes):
        states, acts, reward = _episode(agent.act)
        actions.extend(acts)
        stats.append(agent.end_episode(states, acts, reward))
    return actions, stats


@pytest.mark.parametrize("seed", [0, 1])
def test_finds_the_known_optimum(seed: int) -> None:
    agent = DdpgAgent(STATE, ACTIONS, SEARCH, seed=seed)
    best = -math.inf
    for _ in range(EPISODES):
        states, actions, reward = _episode(agent.act)
        agent.end_episode(states, actions, reward)
        best = max(best, reward)
    assert agent.episodes == EPISODES
    assert best >= 0.97, f"best reward {best:.4f} in {EPISODES} episodes (optimum 1.0)"
    _, greedy, greedy_reward = _episode(agent.greedy)
    error = float(np.mean(np.abs(np.array(greedy) - TARGETS)))
    assert error <= 0.1, f"greedy policy {np.round(greedy, 3).tolist()} is {error:.3f} off"
    assert greedy_reward >= 0.95


def test_same_seed_same_actions_and_global_rng_untouched() -> None:
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    a, b = DdpgAgent(STATE, ACTIONS, TINY, seed=7), DdpgAgent(STATE, ACTIONS, TINY, seed=7)
    actions_a, stats_a = _run(a, 8)
    actions_b, stats_b = _run(b, 8)
    assert np.array_equal(np.array(actions_a), np.array(actions_b))
    assert stats_a == stats_b  # nan (nothing trained yet) is math.nan in both
    assert not math.isnan(stats_a[-1]["critic_loss"])  # it did learn after the warm-up
    s = _state(2, np.array([0.3, 0.6]))
    assert np.array_equal(a.greedy(s), b.greedy(s))
    other = DdpgAgent(STATE, ACTIONS, TINY, seed=8)
    assert not np.array_equal(np.array(_run(other, 8)[0]), np.array(actions_a))
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1])
    assert after[2:] == numpy_state[2:]


def test_resume_continues_exactly(tmp_path) -> None:
    # discount > 0 so the target networks enter the critic's targets too; the ring buffer
    # (32 transitions) has wrapped by the checkpoint
    config = dataclasses.replace(TINY, discount=0.9, tau=0.1)
    uninterrupted = DdpgAgent(STATE, ACTIONS, config, seed=3)
    _run(uninterrupted, 10)
    path = tmp_path / "agent.pt"
    torch.save(uninterrupted.state_dict(), path)
    resumed = DdpgAgent(STATE, ACTIONS, config, seed=99)  # every random state comes from the file
    resumed.load_state_dict(torch.load(path, weights_only=True))
    assert resumed.episodes == 10
    actions_u, stats_u = _run(uninterrupted, 6)
    actions_r, stats_r = _run(resumed, 6)
    assert np.array_equal(np.array(actions_u), np.array(actions_r))
    for u, r in zip(stats_u, stats_r, strict=True):
        assert u == r, (u, r)  # losses, noise and baseline bit for bit
    assert not math.isnan(stats_u[-1]["critic_loss"])
    s = _state(4, np.array([0.1, 0.9]))
    assert np.array_equal(uninterrupted.greedy(s), resumed.greedy(s))


def test_load_state_dict_refuses_another_agent() -> None:
    state = DdpgAgent(STATE, ACTIONS, TINY).state_dict()
    with pytest.raises(CheckpointError, match="state_dim"):
        DdpgAgent(STATE + 1, ACTIONS, TINY).load_state_dict(state)
    with pytest.raises(CheckpointError, match="hidden: 16 vs 32"):
        DdpgAgent(STATE, ACTIONS, dataclasses.replace(TINY, hidden=32)).load_state_dict(state)


def test_warmup_actions_are_uniform_and_noise_decays_after() -> None:
    agent = DdpgAgent(STATE, ACTIONS, AgentConfig(warmup_episodes=2, noise_decay=0.9), seed=1)
    s = _state(0, np.zeros(ACTIONS))
    warm = np.array([agent.act(s) for _ in range(2000)])
    assert warm.dtype == np.float64 and warm.shape == (2000, ACTIONS)
    assert warm.min() >= 0.0 and warm.max() <= 1.0
    assert abs(warm.mean() - 0.5) < 0.03 and abs(warm.std() - math.sqrt(1 / 12)) < 0.02
    assert warm.min() < 0.01 and warm.max() > 0.99
    assert np.histogram(warm, bins=4, range=(0, 1))[0].min() > 0.2 * warm.size
    noises, losses = [], []
    for _ in range(5):
        states, actions, reward = _episode(agent.act)
        stats = agent.end_episode(states, actions, reward)
        noises.append(stats["noise"])
        losses.append(stats["critic_loss"])
    # two warm-up episodes keep the noise; each later episode multiplies it by 0.9
    assert noises == pytest.approx([0.5, 0.5, 0.45, 0.405, 0.3645])
    assert agent.noise == noises[-1]
    # nothing is learned before the buffer holds a batch (64 transitions: 13 episodes of 5)
    assert all(math.isnan(x) for x in losses)


def test_explored_actions_are_clipped_and_greedy_is_noise_free() -> None:
    config = AgentConfig(hidden=16, batch_size=8, buffer_size=32, warmup_episodes=0, noise=5.0)
    agent = DdpgAgent(STATE, ACTIONS, config, seed=2)
    s = _state(1, np.array([0.5, 0.5]))
    explored = np.array([agent.act(s) for _ in range(200)])
    assert explored.min() == 0.0 and explored.max() == 1.0  # wide noise, clipped
    assert np.array_equal(agent.greedy(s), agent.greedy(s))
    assert agent.greedy(s).dtype == np.float64 and 0.0 < agent.greedy(s).min() < 1.0
    first = agent.end_episode(*_episode(agent.act)[:2], reward=0.3)
    assert first["baseline"] == pytest.approx(0.3)  # starts at the first reward
    assert math.isnan(first["critic_loss"])  # 5 transitions: no batch of 8 yet
    second = agent.end_episode(*_episode(agent.act)[:2], reward=0.5)
    assert second["baseline"] == pytest.approx(0.95 * 0.3 + 0.05 * 0.5)
    assert math.isfinite(second["critic_loss"]) and math.isfinite(second["actor_loss"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden": 0}, "hidden must be at least 1"),
        ({"batch_size": -4}, "batch_size must be at least 1"),
        ({"buffer_size": 16, "batch_size": 64}, "smaller than batch_size"),
        ({"warmup_episodes": -1}, "warmup_episodes must be at least 0"),
        ({"updates_per_episode": -1}, "updates_per_episode must be at least 0"),
        ({"hidden": 2.5}, "hidden is an integer"),
        ({"actor_lr": 0.0}, "actor_lr must be in > 0"),
        ({"critic_lr": float("nan")}, "critic_lr must be in > 0"),
        ({"noise": -0.1}, "noise must be in >= 0"),
        ({"noise_decay": 0.0}, r"noise_decay must be in \(0, 1\]"),
        ({"tau": 1.5}, r"tau must be in \(0, 1\]"),
        ({"discount": -0.1}, r"discount must be in \[0, 1\]"),
        ({"baseline_decay": 2.0}, r"baseline_decay must be in \[0, 1\]"),
        ({"noise": "high"}, "noise is a number"),
    ],
)
def test_config_validation(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AgentConfig(**change)


def test_config_holds_plain_values_and_bad_inputs_are_refused() -> None:
    config = AgentConfig(hidden=np.int64(8), batch_size=4, buffer_size=8, tau=np.float32(0.5))
    assert type(config.hidden) is int and type(config.tau) is float
    with pytest.raises(ConfigError, match="state_dim and action_dim"):
        DdpgAgent(0, 2)
    agent = DdpgAgent(STATE, ACTIONS, TINY)
    with pytest.raises(ValueError, match="a state is a vector of 7 values"):
        agent.act(np.zeros(3))
    with pytest.raises(ValueError, match="reward must be finite"):
        agent.end_episode([np.zeros(STATE)], [np.zeros(ACTIONS)], float("nan"))
    with pytest.raises(ValueError, match="as many states as actions"):
        agent.end_episode([np.zeros(STATE)], [], 0.0)


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(agent_module, verbose=False)
    assert tried > 0 and failures == 0
