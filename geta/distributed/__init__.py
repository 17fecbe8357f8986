"""geta under ``torch.distributed``: FSDP2-sharded models (:mod:`geta.distributed.fsdp`) and the
reductions that keep every rank's plan identical (:mod:`geta.distributed.reduce`)."""

from geta.distributed.fsdp import gathered, is_sharded, structure_copy, unsharded_copy
from geta.distributed.reduce import is_distributed, sum_across_ranks

__all__ = [
    "gathered",
    "is_distributed",
    "is_sharded",
    "structure_copy",
    "sum_across_ranks",
    "unsharded_copy",
]
