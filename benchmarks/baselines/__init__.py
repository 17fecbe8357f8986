"""Baselines for the frontier benchmark (benchmark code, not library API): what a user would
run instead of geta, trained by geta's own runner (``geta.cli.compress.run_compress``) so that
every method gets the same dense start, data order, epochs, optimizer and LR schedule.

Importing this package registers them as runner methods:

- ``prune-then-qat``: Torch-Pruning structured pruning, then uniform fixed-bit QAT;
- ``qat-only``: uniform fixed-bit QAT (where ``32 / bits`` meets the budget);
- ``magnitude-qat``: unstructured global magnitude pruning, then uniform fixed-bit QAT;
- ``ffn-magnitude-qat`` (a registered compression mode, so HuggingFace runs train it too):
  uniform fixed-bit QAT plus magnitude pruning of a transformer's FFN channels.

geta's own allocation with simple training is a geta config, not a baseline:
``CompressorConfig(warmup=0, bit_reduction=0, joint=0)`` (plan once, then masked QAT).
"""

from __future__ import annotations

from baselines.ffn_magnitude_qat import FfnMagnitudeQatConfig
from baselines.magnitude_qat import MagnitudeQat
from baselines.prune_then_qat import PruneThenQat
from geta import config
from geta.cli.methods import register_run_method
from geta.errors import BudgetError

__all__ = ["FfnMagnitudeQatConfig", "MagnitudeQat", "PruneThenQat", "BASELINES"]

BASELINES = {
    "prune-then-qat": PruneThenQat,
    "qat-only": PruneThenQat,
    "magnitude-qat": MagnitudeQat,
}


def _start(name: str):
    def start(spec, model, example, steps):
        method = config.from_dict(BASELINES[name], spec.method, where=f"method ({name})")
        run = method.start(
            model, example, spec.parsed_budget, steps, **spec.optimizer.kwargs(spec.lr)
        )
        if name == "qat-only" and run.settings.get("channel_ratio", 0) > 0:
            raise BudgetError(
                f"QAT alone at {method.bits} bits does not meet {spec.budget}; it needs pruning"
            )
        return run

    return start


for _name in BASELINES:
    register_run_method(_name, _start(_name))
