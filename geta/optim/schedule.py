"""GETA's four stages over a run of ``total_steps`` optimizer steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Schedule", "WARMUP", "BIT_REDUCTION", "JOINT", "COOLDOWN"]

WARMUP, BIT_REDUCTION, JOINT, COOLDOWN = "warmup", "bit_reduction", "joint", "cooldown"


def _steps(part: float | int, total: int) -> int:
    return int(part) if isinstance(part, int) else int(math.floor(part * total))


@dataclass(frozen=True)
class Schedule:
    """Step boundaries: warm-up, bit reduction, joint pruning + quantization in ``periods``
    equal periods, then cool-down with frozen bits until ``total_steps`` (and beyond).

    Example:
        >>> s = Schedule.of(1000, warmup=0.1, bit_reduction=0.1, joint=0.5, periods=5)
        >>> s.stage(0), s.stage(150), s.stage(400), s.stage(900)
        ('warmup', 'bit_reduction', 'joint', 'cooldown')
        >>> s.period(400)
        (2, 400, 500)
    """

    total_steps: int
    warmup: int
    bit_reduction: int
    joint: int
    periods: int

    @classmethod
    def of(
        cls,
        total_steps: int,
        warmup: float | int = 0.1,
        bit_reduction: float | int = 0.1,
        joint: float | int = 0.5,
        periods: int = 5,
    ) -> Schedule:
        """Stage lengths as fractions of ``total_steps`` (floats) or step counts (ints)."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}")
        w, r, j = (_steps(p, total_steps) for p in (warmup, bit_reduction, joint))
        if w + r + j > total_steps:
            raise ValueError(
                f"warm-up ({w}) + bit reduction ({r}) + joint ({j}) steps exceed total_steps "
                f"({total_steps})"
            )
        periods = max(1, min(periods, j)) if j else 0
        return cls(total_steps, w, r, j, periods)

    @property
    def joint_start(self) -> int:
        return self.warmup + self.bit_reduction

    @property
    def cooldown_start(self) -> int:
        return self.joint_start + self.joint

    def stage(self, step: int) -> str:
        if step < self.warmup:
            return WARMUP
        if step < self.joint_start:
            return BIT_REDUCTION
        if step < self.cooldown_start:
            return JOINT
        return COOLDOWN

    def period(self, step: int) -> tuple[int, int, int]:
        """``(index, first step, end step)`` of the joint-stage period holding ``step``."""
        offset = step - self.joint_start
        index = min(offset * self.periods // self.joint, self.periods - 1)
        start = self.joint_start + index * self.joint // self.periods
        end = self.joint_start + (index + 1) * self.joint // self.periods
        return index, start, end
