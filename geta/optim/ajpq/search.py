"""AJPQ's search: episodes of the hierarchical controller, each policy walled into the budget,
recovered briefly and scored on held-out data; the best policy is what QAT then trains.

One episode: for each counted layer in topological order the DDPG agent sees the layer's state
(:mod:`geta.optim.ajpq.policy`) and acts; the channel controller turns each action into unit
bits; the action wall (:mod:`geta.optim.ajpq.wall`) reduces the plan until the budget holds
(counting the expected nonzero codes at each channel's bits); the plan is applied to the
starting weights (0-bit units zeroed, per-channel quantizers calibrated), its zero codes held
and the budget enforced on the measured cost (:mod:`geta.optim.ajpq.hold`), recovered (a few
fine-tuning steps or BatchNorm re-estimation) and scored; the
score is the reward of every action of the episode. The model returns to its starting weights
after each episode and carries the best plan at the end.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from geta.errors import CheckpointError, ConfigError
from geta.optim.ajpq.agent import DdpgAgent
from geta.optim.ajpq.config import AjpqConfig
from geta.optim.ajpq.hold import apply_held, hold_codes
from geta.optim.ajpq.policy import (
    ACTION_SIZE,
    STATE_SIZE,
    LayerPolicy,
    layer_order,
    static_features,
)
from geta.optim.ajpq.wall import ActionWall, channel_tables
from geta.optim.channel_bits import ChannelLayout, ChannelPlan
from geta.optim.mode import SearchData
from geta.optim.problem import CompressionProblem
from geta.optim.report import measure_layers, measured_cost
from geta.quant.prepare import quantizers

__all__ = ["AjpqSearch"]

_FORMAT = 1
FIT_ROUNDS = 4  # wall -> apply -> measure rounds of :meth:`AjpqSearch.fit`
FIT_LOW = 0.97  # a fitted plan measures within [FIT_LOW, 1] x the budget (before trimming)


def _squash(x: float) -> float:
    """``[0, inf)`` onto ``[0, 1)``: budget shares can be many times the budget."""
    return x / (1.0 + x)


class AjpqSearch:
    """The search over one :class:`~geta.optim.problem.CompressionProblem` (see the module
    docstring). Built and run by :meth:`geta.Compressor.search` in AJPQ mode; ``positions``
    (MACs per weight of each layer, :func:`geta.optim.cost.output_positions`) describe the
    layers' compute to the agent.

    Example:
        >>> search = AjpqSearch(compressor.problem, AjpqConfig(episodes=30))  # doctest: +SKIP
        >>> search.run(SearchData(train_loader, heldout_loader))               # doctest: +SKIP
        >>> search.best_plan, search.best_reward                               # doctest: +SKIP
    """

    def __init__(
        self,
        problem: CompressionProblem,
        config: AjpqConfig,
        positions: dict[str, float] | None = None,
    ) -> None:
        self.problem = problem
        self.config = config
        self.model = problem.model
        self.layout = ChannelLayout(problem)
        self.order = layer_order(problem)
        levels = config.bit_levels
        self.importance = problem.importance(config.saliency)
        self.policy = LayerPolicy(
            self.layout, self.order, self.importance, levels, config.max_sparsity, config.spread
        )
        distortion, self.share = channel_tables(self.layout, levels)
        self.wall = ActionWall(
            self.layout,
            self.importance,
            distortion,
            levels,
            self.policy.min_keep,
            self.share,
            fill=config.fill,
        )
        self.features = static_features(problem, self.order, positions)
        self.target = float(problem.target)
        self.agent = DdpgAgent(STATE_SIZE, ACTION_SIZE, config.agent, seed=config.seed)
        self.history: list[dict[str, float]] = []
        self.best_plan: ChannelPlan | None = None
        self.best_reward = -math.inf
        self.seconds = 0.0
        self.batches_used = 0  # training batches the recoveries consumed (a resume skips them)
        self._start = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------ one episode
    def _state(self, rank: int, plan: ChannelPlan, last: np.ndarray) -> np.ndarray:
        """The layer controller's view of the ``rank``-th layer: its static description, the
        budget its predecessors used, the budget left, what the rest costs at most bits, and
        the previous action."""
        costs = self.problem.cost_model.channel_costs(plan.removed, self.layout.channel_bits(plan))
        done = self.order[:rank]
        used = float(costs[done].sum()) if done else 0.0
        rest = float(costs[self.order[rank:]].sum())
        dynamic = [
            _squash(used / self.target),
            _squash(max(self.target - used, 0.0) / self.target),
            _squash(rest / self.target),
            *last.tolist(),
        ]
        return np.concatenate([self.features[rank], dynamic]).astype(np.float64)

    def rollout(self, act: Callable[[np.ndarray], np.ndarray]) -> tuple[ChannelPlan, list, list]:
        """One pass of both controllers with ``act`` (the agent's exploring or greedy
        action): the plan they chose (before the wall), and the states and actions."""
        plan = self.policy.start()
        states, actions = [], []
        last = np.full(ACTION_SIZE, 0.5)
        for rank, layer in enumerate(self.order):
            state = self._state(rank, plan, last)
            action = np.clip(np.asarray(act(state), dtype=np.float64), 0.0, 1.0)
            self.policy.decide(plan, layer, action)
            states.append(state)
            actions.append(action)
            last = action
        return plan, states, actions

    # ------------------------------------------------------------ evaluation
    def restore(self) -> None:
        """Put the starting weights and quantizers back."""
        self.model.load_state_dict(self._start)

    def fit(self, chosen: ChannelPlan) -> ChannelPlan:
        """The controllers' plan walled into the budget and applied to the starting weights:
        the wall counts each channel's expected nonzero codes, measured on the unpruned
        weights; once the plan is applied (clips refitted on what is left) each layer's
        measured cost corrects its estimate and the wall runs again, up to
        :data:`FIT_ROUNDS` times, so the plan spends the budget it has."""
        cm = self.problem.cost_model
        scale = np.ones(len(cm.layers))
        plan = self.wall(chosen, self.target)
        for round_ in range(FIT_ROUNDS):
            self.restore()
            self.layout.apply(plan, low_bits=self.config.bit_levels[0])
            rows, _, _ = measure_layers(cm)
            measured = cm.coefficients() * np.array([r.payload_bits for r in rows])
            if round_ + 1 == FIT_ROUNDS or FIT_LOW * self.target <= measured.sum() <= self.target:
                break
            estimate = cm.channel_costs(plan.removed, self.layout.cost_bits(plan, self.share))
            estimate *= scale
            ratio = np.where(estimate > 0, measured / np.maximum(estimate, 1e-300), 1.0)
            scale = scale * np.where(ratio > 0, ratio, 1.0)
            plan = self.wall(chosen, self.target, scale)
        return plan

    def land(self, plan: ChannelPlan) -> list[torch.Tensor]:
        """Apply ``plan`` to the starting weights and hold its codes within the budget
        (:func:`geta.optim.ajpq.hold.hold_codes`); returns the keep masks."""
        self.restore()
        self.layout.apply(plan, low_bits=self.config.bit_levels[0])
        return hold_codes(self.problem)

    def evaluate(
        self, plan: ChannelPlan, data: SearchData, batches: Iterator
    ) -> tuple[float, float]:
        """The reward of ``plan`` as :meth:`fit` left it applied to the starting weights, and
        its measured cost: its codes held within the budget, recovered with its zeros held,
        scored on the held-out batches. The model keeps the recovered plan (call
        :meth:`restore`)."""
        keep = hold_codes(self.problem)
        cost = measured_cost(self.problem.cost_model)
        was_training = self.model.training
        try:
            self._recover(plan, keep, data, batches)
            return self._score(data), cost
        finally:
            self.model.train(was_training)
            self.model.zero_grad(set_to_none=True)

    def _weights(self) -> list[nn.Parameter]:
        quantizer_params = {id(p) for q in quantizers(self.model) for p in q.parameters()}
        return [
            p for p in self.model.parameters() if id(p) not in quantizer_params and p.requires_grad
        ]

    def _recover(
        self, plan: ChannelPlan, keep: list[torch.Tensor], data: SearchData, batches: Iterator
    ) -> None:
        cfg = self.config
        if cfg.recovery == "none" or cfg.recovery_steps == 0:
            return
        self.model.train()
        if cfg.recovery == "bn":
            self._recalibrate_norms(batches)
            return
        masks = self.problem.removal_factors(plan.removed)
        optimizer = torch.optim.SGD(self._weights(), lr=cfg.recovery_lr, momentum=0.9)
        for _ in range(cfg.recovery_steps):
            inputs, targets = self._to_device(next(batches))
            optimizer.zero_grad(set_to_none=True)
            data.loss(self.model(inputs), targets).backward()
            optimizer.step()
            with torch.no_grad():
                for p, values in masks:
                    p.mul_(values)
                apply_held(self.problem, keep)

    @torch.no_grad()
    def _recalibrate_norms(self, batches: Iterator) -> None:
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the recovery batches
        try:
            for _ in range(self.config.recovery_steps):
                inputs, _ = self._to_device(next(batches))
                self.model(inputs)
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum

    @torch.no_grad()
    def _score(self, data: SearchData) -> float:
        self.model.eval()
        correct = total = 0
        loss = 0.0
        for inputs, targets in itertools.islice(data.heldout, self.config.eval_batches):
            inputs, targets = self._to_device((inputs, targets))
            outputs = self.model(inputs)
            loss += float(data.loss(outputs, targets)) * len(targets)
            if self.config.reward == "accuracy":
                correct += int((outputs.argmax(-1) == targets).sum())
            total += len(targets)
        if total == 0:
            raise ConfigError("the held-out data gave no batch to score a policy on")
        return correct / total if self.config.reward == "accuracy" else -loss / total

    def _to_device(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        inputs, targets = batch
        return inputs.to(device), targets.to(device)

    # ------------------------------------------------------------ the loop
    def run(
        self,
        data: SearchData,
        *,
        progress: bool = True,
        on_episode: Callable[[dict[str, Any]], None] | None = None,
    ) -> AjpqSearch:
        """Run the episodes left (all, or those after a restored :meth:`state_dict`); the
        model ends at the best plan (starting weights, 0-bit units zeroed, quantizers set)."""
        batches = _Counted(_cycle(data.train), self)
        for _ in range(self.batches_used):  # a resumed search continues the batch sequence
            next(batches.source)
        left = self.config.episodes - len(self.history)
        with tqdm(
            total=self.config.episodes,
            initial=len(self.history),
            desc="AJPQ search",
            unit="episode",
            disable=not progress or left <= 0,
            dynamic_ncols=True,
        ) as bar:
            for _ in range(max(left, 0)):
                began = time.perf_counter()
                chosen, states, actions = self.rollout(self.agent.act)
                plan = self.fit(chosen)
                reward, cost = self.evaluate(plan, data, batches)
                learned = self.agent.end_episode(states, actions, reward)
                if reward > self.best_reward:
                    self.best_reward, self.best_plan = reward, plan
                self.seconds += time.perf_counter() - began
                self.history.append(
                    {
                        "episode": float(len(self.history)),
                        "reward": float(reward),
                        "best_reward": float(self.best_reward),
                        "cost": cost,
                        "planned_cost": self.layout.cost(plan, self.share),
                        "pruned": float(plan.removed.sum()),
                        "mean_bits": float(plan.unit_bits[~plan.removed].mean())
                        if (~plan.removed).any()
                        else 0.0,
                        "noise": float(learned.get("noise", math.nan)),
                        "seconds": self.seconds,
                    }
                )
                bar.update(1)
                bar.set_postfix(best=f"{self.best_reward:.4g}", reward=f"{reward:.4g}")
                if on_episode is not None:
                    on_episode(self.state_dict())
        self.restore()
        if self.best_plan is not None:
            self.land(self.best_plan)
        return self

    # ------------------------------------------------------------ results and state
    def layer_summary(self, plan: ChannelPlan) -> list[dict[str, Any]]:
        """Per counted layer: channels, pruned channels and the histogram of kept bits."""
        rows = []
        cm = self.problem.cost_model
        for i, bits in enumerate(self.layout.channel_bits(plan)):
            kept = bits[bits > 0].astype(int)
            values, counts = np.unique(kept, return_counts=True)
            rows.append(
                {
                    "layer": cm.layers[i].name,
                    "channels": int(bits.size),
                    "pruned": int((bits == 0).sum()),
                    "bits": {str(v): int(c) for v, c in zip(values, counts, strict=True)},
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """A JSON summary for reports and plots: per-episode rows, the best reward and its
        policy per layer, the wall time and the settings that shape the search."""
        return {
            "method": "ajpq",
            "episodes": len(self.history),
            "history": list(self.history),
            "best_reward": self.best_reward if self.best_plan is not None else None,
            "reward": self.config.reward,
            "recovery": self.config.recovery,
            "seconds": self.seconds,
            "policy": self.layer_summary(self.best_plan) if self.best_plan is not None else [],
        }

    def state_dict(self) -> dict[str, Any]:
        """The agent, the history and the best plan (plain values and tensors: loadable with
        ``torch.load(..., weights_only=True)``)."""
        return {
            "format": _FORMAT,
            "agent": self.agent.state_dict(),
            "history": [dict(row) for row in self.history],
            "best_plan": self.best_plan.to_dict() if self.best_plan is not None else None,
            "best_reward": self.best_reward,
            "seconds": self.seconds,
            "batches_used": self.batches_used,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a search from :meth:`state_dict` (same model, budget and config)."""
        if state.get("format") != _FORMAT:
            raise CheckpointError(
                f"AJPQ search state of format {state.get('format')!r}; this geta reads {_FORMAT}"
            )
        best = state["best_plan"]
        if best is not None and len(best["unit_bits"]) != self.problem.units.count:
            raise CheckpointError(
                "the saved AJPQ search is for another model or graph "
                f"({len(best['unit_bits'])} units, this one has {self.problem.units.count})"
            )
        self.agent.load_state_dict(state["agent"])
        self.history = [dict(row) for row in state["history"]]
        self.best_plan = ChannelPlan.from_dict(best) if best is not None else None
        self.best_reward = float(state["best_reward"])
        self.seconds = float(state["seconds"])
        self.batches_used = int(state["batches_used"])


def _cycle(loader: Any) -> Iterator:
    """Batches of ``loader`` forever (a new pass when one ends)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("the training data gave no batch for the search's recovery")


class _Counted:
    """An iterator over ``source`` that counts what it hands out into ``search.batches_used``."""

    def __init__(self, source: Iterator, search: AjpqSearch) -> None:
        self.source, self.search = source, search

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        item = next(self.source)
        self.search.batches_used += 1
        return item
