"""AJPQ mode: channel-wise mixed precision (0 bits = pruned) found by a hierarchical DDPG
search; its config, agent, controllers, action wall, search, QAT optimizer and registration."""

from geta.optim.ajpq.agent import AgentConfig, DdpgAgent
from geta.optim.ajpq.config import AjpqConfig
from geta.optim.ajpq.mode import AjpqMode
from geta.optim.ajpq.optimizer import AjpqOptimizer
from geta.optim.ajpq.search import AjpqSearch
from geta.optim.ajpq.wall import ActionWall

__all__ = [
    "ActionWall",
    "AgentConfig",
    "AjpqConfig",
    "AjpqMode",
    "AjpqOptimizer",
    "AjpqSearch",
    "DdpgAgent",
]
