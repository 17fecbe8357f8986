"""Progressive ADMM (Ye et al. 2019): per-layer targets reached in steps."""

from geta.optim.admm_progressive.mode import ProgressiveAdmmMode

__all__ = ["ProgressiveAdmmMode"]
