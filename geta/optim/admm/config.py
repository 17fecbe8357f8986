"""Settings of the ADMM modes (Yang et al.'s budget ADMM, Ye et al.'s progressive ADMM)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from geta import config
from geta.errors import ConfigError

__all__ = ["AdmmConfig", "LayerTarget", "GRANULARITIES", "ADMM_MODES"]

GRANULARITIES = ("weight", "group")
DISTANCES = ("euclidean", "fisher")
PROXIMALS = ("budget", "zeros")
ADMM_MODES = ("admm", "admm-progressive")

# the papers' public recipes (ALGORITHMS.md sections 2 and 3): Yang et al. keep rho at 0.05;
# Ye et al. start small and multiply rho by 1.3 at every V/U update
_RHO = {"admm": (0.05, 1.0), "admm-progressive": (1e-3, 1.3)}
# by (mode, granularity), from the frontier's ablations: unstructured budget ADMM reaches its
# budget in a ramp of 5 projections over the first 30% of the run and fine-tunes the rest;
# structured budget ADMM projects once, after 30% of the run (10%, `[finetune-0.9]` in the
# ablations, starved a ResNet-20's last stage); progressive runs keep the papers' quarter per step
_FINETUNE = {("admm", "weight"): 0.7, ("admm", "group"): 0.7, ("admm-progressive", "weight"): 0.25}
_RAMP = {("admm", "weight"): 5}
# budget ADMM pulls only the weights V drops (frontier ablations: unstructured `[*-zeros]`,
# structured `admm-structured[budget-pull]`); progressive ADMM keeps the papers' pull onto its
# binary and ternary levels
_PROXIMAL = {("admm", "weight"): "zeros", ("admm", "group"): "zeros"}
# unstructured projections weigh weights by the Fisher; structured ones rank groups by energy
# (the Fisher ranking, `admm-structured[fisher]` in the ResNet-20 ablations, scored lower)
_DISTANCE = {"weight": "fisher", "group": "euclidean"}


@dataclass(frozen=True)
class LayerTarget:
    """Ye et al.'s target for one layer: keep ``density`` of its weights (the largest
    magnitudes) and, with ``bits``, put the kept ones on ``2^(bits-1) - 1`` symmetric levels
    ``{+-k q}`` (zeros stay zero; ``q`` least squares). ``bits=1`` is binary ``{-q, +q}``
    (every weight kept); ``bits=2`` is ternary ``{-q, 0, +q}``; ``None`` leaves them float.

    Example:
        >>> LayerTarget.binary().levels, LayerTarget.ternary(0.3).levels, LayerTarget(0.1, 4).levels
        (1, 1, 7)
    """

    density: float = 1.0
    bits: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise ConfigError(f"a layer's density is in (0, 1], got {self.density}")
        if self.bits is not None and not 1 <= self.bits <= 16:
            raise ConfigError(f"target bits are 1..16 (1 = binary, 2 = ternary), got {self.bits}")
        if self.bits == 1 and self.density < 1:
            raise ConfigError(
                "a binary layer keeps every weight (its codes are +-1); for pruned layers with "
                "two levels use LayerTarget.ternary(density)"
            )

    @classmethod
    def binary(cls) -> LayerTarget:
        return cls(1.0, 1)

    @classmethod
    def ternary(cls, density: float = 1.0) -> LayerTarget:
        return cls(density, 2)

    @property
    def levels(self) -> int | None:
        """``M``, the positive levels (``None``: float)."""
        if self.bits is None:
            return None
        return 1 if self.bits <= 2 else 2 ** (self.bits - 1) - 1


@dataclass(frozen=True)
class AdmmConfig:
    """Settings of ``mode="admm"`` and ``mode="admm-progressive"`` (``CompressorConfig.admm``).

    - ``granularity``: ``"weight"`` (unstructured: every weight is a unit, ranked by
      ``w^2 / bits`` across layers) or ``"group"`` (structured: the graph's groups, ranked by
      their energy per cost; removed groups are pruned physically by ``finalize()``).
      ``admm-progressive`` is unstructured.
    - ``rho``, ``rho_growth``, ``rho_max``: the penalty at the start, its factor at every V/U
      update, and its cap. ``None``: the mode's papers' value (admm 0.05 constant;
      progressive 1e-3, x1.3).
    - ``balance_rho``: instead of ``rho_growth``, adapt ``rho`` at every V/U update by
      residual balancing (Boyd et al. 2011, sec. 3.4.1): double it while the weights are far
      from ``V`` relative to how far ``V`` moved, halve it in the opposite case (capped at
      ``rho_max``).
    - ``update_every``: V/U updates every that many optimizer steps (an int; the papers: one
      epoch) or that fraction of each ADMM phase (a float).
    - ``finetune``: the share (float) or steps (int) of each run spent on masked fine-tuning
      after the hard projection (zeros held, bits frozen). ``None``: for ``admm`` 0.7
      unstructured (after the ramp over the first 30%) and structured (one projection after
      30% of the run); 0.25 per step for ``admm-progressive``. Budget ADMM fine-tunes that
      long because in a run of a fixed length with one learning-rate schedule the weights
      need most of it, at a learning rate that still moves them, to recover from the
      projection (LeNet-5 Fashion-MNIST 1,000x, one projection: 74.9% at 0.25, 81.7% at 0.7,
      83.5% at 0.9); structured ADMM projects no earlier than 30% so that the pull has moved
      the network first (ResNet-20 100x: 88.00% after 10%, 89.05% after 30%). The papers'
      long ADMM phase followed by a separate retraining is ``finetune=0.25, ramp=1`` with a
      schedule restarted by the caller.
    - ``quantizer``: ``"uniform"`` (GETA's quantizer at ``t = 1``; exported as integer codes).
      k-means codebooks are not offered: the artifact has no codebook storage.
    - ``targets``: progressive only; one :class:`LayerTarget` for every layer, or one per
      layer name (layers left out stay as they are). ``None``: per-layer targets derived from
      the budget by the budget projection.
    - ``steps``: progressive steps; step ``k`` of ``K`` keeps ``density ** (k / K)`` of each
      layer, starting from the previous step's result; bits are applied in the last step.
    - ``ramp``: budget ADMM, unstructured: the budget is reached in that many hard
      projections spread evenly over the ADMM phase, the ``k``-th at the cost
      ``C0 - (C0 - B) (1 - (1 - k/ramp)^3)`` (``C0`` every weight at the highest bits, ``B`` the
      budget: Zhu and Gupta's cubic schedule); each one zeroes the weights its projection
      drops and holds them at zero, and the V-steps in between project onto the next
      budget. ``1``: one hard projection at the end of the ADMM phase (the papers'). ``None``:
      5 for unstructured ``admm``, else 1. One projection straight to 0.1-1% of the weights
      loses what gradual removal lets the rest learn to make up (LeNet-5 Fashion-MNIST,
      1,000x: 83.3% with one projection, 84.9% with the ramp; ``docs/admm.md``).
    - ``min_layer_density``: the least share of its weights an unstructured layer keeps
      (at least one weight).
    - ``learn_clip``: in masked fine-tuning each quantized layer's clip (and with it the step,
      its bits fixed) trains by gradient, with LSQ's scale, at the optimizer's ``lr_quant``;
      off, the hard projection's clip stays (the papers'). After a hard projection to 1% of
      the weights the kept ones must grow to make up for the rest: a fixed clip holds them
      back.
    - ``distance``: what the budget projection minimises: ``"euclidean"`` (the papers'
      ``||Z - V||^2``) or ``"fisher"`` (``sum F (z - v)^2`` with the diagonal empirical Fisher
      ``F``, a running mean of squared gradients: the loss the projection costs to second
      order). ``None``: ``"fisher"`` unstructured, ``"euclidean"`` structured. Unstructured,
      the Euclidean distance weighs every weight alike, so at extreme ratios it spends the
      budget on a few layers' large weights and starves a layer the loss needs (LeNet-5
      Fashion-MNIST 2,000x: fc1 kept 14 weights, 66.1%; Fisher: 77.0%). Structured, groups
      are ranked by their energy ``sum_u z^2`` or by ``sum_u F z^2``, each layer's bit
      distortion weighed to match; the Fisher ranking is blind to the scale a batch norm
      after a layer leaves free, but scored lower on ResNet-20 (``docs/admm.md``).
    - ``proximal``: what the proximal term ``rho (W - V + U)`` pulls toward in the ADMM
      phase. ``"budget"`` (the papers'): the whole projection ``V``, the weights it drops to
      zero and the kept ones onto their quantization levels. ``"zeros"``: only the weights
      ``V`` drops, toward zero (their duals alone accumulate); the kept weights train freely
      in float and their quantization is learned in fine-tuning (LSQ), as in the
      magnitude + QAT pipeline. ``None``: ``"zeros"`` for budget ADMM (both granularities),
      ``"budget"`` for progressive ADMM. Pulling the kept weights onto levels that the
      fine-tuning's learned clips move anyway costs accuracy (LeNet-5, 3 seeds, budget ->
      zeros; unstructured, every layer at 3 bits: Fashion-MNIST 300x 88.82% -> 89.35%,
      1,000x 85.39% -> 86.10%, 2,000x 81.11% -> 82.42%, MNIST 1,000x at 20 epochs 98.87%
      (seed 0) -> 99.08%; structured: Fashion-MNIST 100x 90.02% -> 90.52%, 300x 88.64% ->
      88.94%; ``docs/admm.md``). Progressive ADMM's binary and ternary targets are the
      levels, so it keeps the pull onto them.
    - ``hold_zero_codes``: structured budget ADMM, with ``count_zero_codes``: the hard
      projection's keep masks leave out the weights of kept units whose code is zero then, so
      masked fine-tuning holds them at zero (``True``), or hold only the removed groups and the
      codes trimmed to meet the budget, the zero codes staying free to leave the zero bin as
      they train (``False``; the trim points then enforce the measured budget).

    Example:
        >>> cfg = AdmmConfig(granularity="group", update_every=469)   # one epoch of steps
        >>> cfg.resolved("admm").rho, cfg.resolved("admm-progressive").rho_growth
        (0.05, 1.3)
        >>> cfg.resolved("admm").finetune, cfg.resolved("admm-progressive").finetune
        (0.7, 0.25)
        >>> AdmmConfig().resolved("admm").ramp, AdmmConfig().resolved("admm").finetune
        (5, 0.7)
        >>> cfg.resolved("admm").proximal, cfg.resolved("admm-progressive").proximal
        ('zeros', 'budget')
        >>> cfg.resolved("admm").distance, AdmmConfig().resolved("admm").distance
        ('euclidean', 'fisher')
    """

    granularity: str = "weight"
    rho: float | None = None
    rho_growth: float | None = None
    rho_max: float = 1.0
    update_every: int | float = 0.05
    finetune: int | float | None = None
    quantizer: str = "uniform"
    targets: LayerTarget | dict[str, LayerTarget] | None = None
    steps: int = 1
    ramp: int | None = None
    balance_rho: bool = False
    min_layer_density: float = 0.0
    learn_clip: bool = True
    distance: str | None = None
    proximal: str | None = None
    hold_zero_codes: bool = True

    def __post_init__(self) -> None:
        if self.proximal is not None and self.proximal not in PROXIMALS:
            raise ConfigError(f"proximal is one of {', '.join(PROXIMALS)}, not {self.proximal!r}")
        if self.distance is not None and self.distance not in DISTANCES:
            raise ConfigError(f"distance is one of {', '.join(DISTANCES)}, not {self.distance!r}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"granularity is one of {', '.join(GRANULARITIES)}, not {self.granularity!r}"
            )
        if self.quantizer != "uniform":
            raise ConfigError(
                f"quantizer {self.quantizer!r} is not offered: ADMM modes quantize uniformly "
                "(the artifact stores integer codes and steps, no codebooks)"
            )
        if self.steps < 1:
            raise ConfigError(f"progressive steps must be at least 1, got {self.steps}")
        if self.ramp is not None and self.ramp < 1:
            raise ConfigError(f"ramp is at least 1 projection, got {self.ramp}")
        if self.ramp is not None and self.ramp > 1 and self.granularity != "weight":
            raise ConfigError(
                "ramp applies to unstructured budget ADMM (granularity='weight'); structured "
                "ADMM removes its groups in one projection"
            )
        if isinstance(self.update_every, float) and not 0 < self.update_every <= 1:
            raise ConfigError(f"update_every as a fraction is in (0, 1], got {self.update_every}")
        if isinstance(self.update_every, int) and self.update_every < 1:
            raise ConfigError(f"update_every as steps is at least 1, got {self.update_every}")
        if isinstance(self.finetune, float) and not 0 <= self.finetune < 1:
            raise ConfigError(f"finetune as a fraction is in [0, 1), got {self.finetune}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (with a format version) for JSON/TOML; :meth:`from_dict` reads them."""
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdmmConfig:
        """The config :meth:`to_dict` wrote; unknown keys raise :class:`geta.ConfigError`."""
        return config.from_dict(cls, data)

    def resolved(self, mode: str) -> AdmmConfig:
        """This config with the mode's (and granularity's) default ``rho``, ``rho_growth``,
        ``finetune``, ``ramp``, ``proximal`` and ``distance`` filled in."""
        rho, growth = _RHO[mode]
        key = (mode, self.granularity)
        return replace(
            self,
            rho=self.rho if self.rho is not None else rho,
            rho_growth=self.rho_growth if self.rho_growth is not None else growth,
            finetune=self.finetune
            if self.finetune is not None
            else _FINETUNE.get(key, _FINETUNE[(mode, "weight")]),
            ramp=self.ramp if self.ramp is not None else _RAMP.get(key, 1),
            proximal=self.proximal if self.proximal is not None else _PROXIMAL.get(key, "budget"),
            distance=self.distance if self.distance is not None else _DISTANCE[self.granularity],
        )

    def interval(self, admm_steps: int) -> int:
        """V/U update interval in steps for an ADMM phase of ``admm_steps``."""
        if isinstance(self.update_every, int):
            return self.update_every
        return max(1, math.ceil(self.update_every * admm_steps))
