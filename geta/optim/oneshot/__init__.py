"""The one-shot mode: compression from calibration data alone (no training loop)."""

from geta.optim.oneshot.config import OneshotConfig
from geta.optim.oneshot.gptq import gptq
from geta.optim.oneshot.mode import HeldOptimizer, OneshotMode, OneshotResult

__all__ = ["HeldOptimizer", "OneshotConfig", "OneshotMode", "OneshotResult", "gptq"]
