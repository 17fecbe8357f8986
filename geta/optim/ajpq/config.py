"""Settings of AJPQ mode (ALGORITHMS.md section 5): the bit choices, the two controllers, the
search's episodes and reward, and the QAT that trains the chosen policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geta import config
from geta.errors import ConfigError
from geta.optim.ajpq.agent import AgentConfig
from geta.optim.alignment import check_channel_multiple

__all__ = ["AjpqConfig", "RECOVERIES", "REWARDS", "SEARCH_AGENT"]

RECOVERIES = ("finetune", "bn", "none")
# the agent's settings for a search of tens of episodes: a slower actor (its sigmoid saturates
# chasing an early critic), a buffer of about the last 50 episodes of a 20-layer network
# (transitions of old policies mislead the critic: every step shares one reward), a longer
# warm-up and a slower noise decay than AgentConfig's defaults (tests/optim/ajpq/test_agent.py
# measures the same on a synthetic problem)
SEARCH_AGENT = AgentConfig(actor_lr=3e-4, buffer_size=1024, warmup_episodes=15, noise_decay=0.97)
REWARDS = ("accuracy", "loss")


@dataclass
class AjpqConfig:
    """``Compressor(model, x, budget, config=AjpqConfig(...))`` runs AJPQ mode: each unit of
    each group (a channel, coupled across its group) gets bits in ``{0, low, ..., high}``, 0
    meaning pruned, chosen by a hierarchical DDPG search (:meth:`geta.Compressor.search`);
    the chosen policy then trains with QAT (masks held, bits frozen).

    - ``bit_range``: the nonzero bits ``(low, high)`` a channel may take (``low >= 2``).
    - ``max_sparsity``: the largest share of a group's units at 0 bits.
    - ``channel_multiple``: every group keeps a multiple of this many channels (or all of
      them), in the controllers' cuts and the action wall's removals
      (:mod:`geta.optim.alignment`; ``CompressorConfig.channel_multiple`` in the other modes).
    - ``spread``: the channel controller gives a layer's kept units ``level - spread`` ..
      ``level + spread`` bits, the more important the more bits (0: one level per layer).
    - ``episodes``: policies evaluated (the first ``agent.warmup_episodes`` are random).
    - ``recovery``: after a policy is applied, ``"finetune"`` (``recovery_steps`` SGD steps at
      ``recovery_lr`` on training batches, masks held), ``"bn"`` (BatchNorm statistics
      re-estimated on ``recovery_steps`` training batches) or ``"none"``.
    - ``fill``: the action wall also raises the bits of a policy under the budget (most
      quantization error removed per bit of cost first) until no raise fits, so every
      evaluated policy spends its budget; off, the controllers' bits are only ever lowered
      (HAQ's and AMC's wall) and the best policies can land well under the budget.
    - ``eval_batches``: held-out batches the reward is measured on; ``reward`` is the
      held-out ``"accuracy"`` or minus the ``"loss"`` (the budget is a hard wall, so nothing
      else enters the reward).
    - ``saliency``: the one importance criterion both controllers and the action wall rank
      units by (:func:`geta.optim.saliency.importance`).
    - ``learn_clip``: QAT learns each channel's clip at its frozen bits.
    - ``seed``: the agent's randomness (the training run's own random state is left alone).
    - ``agent``: the DDPG agent's settings (:class:`geta.optim.ajpq.AgentConfig`).
    """

    bit_range: tuple[int, int] = (2, 8)
    max_sparsity: float = 0.8
    channel_multiple: int = 1
    spread: int = 1
    episodes: int = 60
    recovery: str = "finetune"
    recovery_steps: int = 50
    recovery_lr: float = 0.01
    fill: bool = True
    eval_batches: int = 10
    reward: str = "accuracy"
    saliency: str = "magnitude"
    learn_clip: bool = True
    seed: int = 0
    agent: AgentConfig = field(default_factory=lambda: SEARCH_AGENT)

    def __post_init__(self) -> None:
        low, high = self.bit_range
        if not 2 <= low <= high <= 16:
            raise ConfigError(
                f"AJPQ's bit_range must satisfy 2 <= low <= high <= 16, got {self.bit_range}"
            )
        if not 0 <= self.max_sparsity < 1:
            raise ConfigError(f"max_sparsity is in [0, 1), got {self.max_sparsity}")
        try:
            check_channel_multiple(self.channel_multiple)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.spread < 0:
            raise ConfigError(f"spread is at least 0, got {self.spread}")
        if self.episodes < 1:
            raise ConfigError(f"episodes is at least 1, got {self.episodes}")
        if self.recovery not in RECOVERIES:
            raise ConfigError(f"recovery is one of {', '.join(RECOVERIES)}, not {self.recovery!r}")
        if self.reward not in REWARDS:
            raise ConfigError(f"reward is one of {', '.join(REWARDS)}, not {self.reward!r}")
        if self.recovery_steps < 0 or self.eval_batches < 1:
            raise ConfigError("recovery_steps is at least 0 and eval_batches at least 1")

    @property
    def bit_levels(self) -> tuple[int, ...]:
        """The nonzero bit-widths a channel may take."""
        return tuple(range(self.bit_range[0], self.bit_range[1] + 1))

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AjpqConfig:
        return config.from_dict(cls, data)
