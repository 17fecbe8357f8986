"""HuggingFace transformers, in one place: capture, compressed checkpoints, the Trainer,
distillation and model-family adapters.

    import geta, transformers
    model = transformers.LlamaForCausalLM(config)
    graph = geta.hf.trace(model)                      # example inputs from the config, no cache
    geta.prune(model, graph, {0: [1], 1: [3, 7]})     # heads and FFN channels; layers may differ
    geta.hf.save_pretrained(model, "out/")
    small = geta.hf.from_pretrained("out/")           # same outputs, no original weights needed

- :mod:`geta.hf.capture`: keyword example inputs from a config, the KV cache off during
  capture (registered as a capture context: ``geta.trace`` and the ``Compressor`` use it);
- :mod:`geta.hf.checkpoint`: :func:`save_pretrained` / :func:`from_pretrained`, with the
  config :mod:`geta.hf.saved_config` works out so plain ``transformers`` loads uniform prunes;
- :mod:`geta.hf.trainer`: ``GetaTrainer`` / ``with_geta`` for ``transformers.Trainer``
  (imports transformers: import it by name);
- :mod:`geta.hf.distill`: distillation from the uncompressed model;
- :mod:`geta.hf.families`: adapters for a family whose sizes geta cannot infer.

Importing this package does not import transformers.
"""

from geta.graph.capture import register_capture_context
from geta.hf import distill, families
from geta.hf.capture import capture_mode, example_inputs, hf_capture_context, trace
from geta.hf.checkpoint import FORMAT, VERSION, from_pretrained, save_pretrained

register_capture_context(hf_capture_context)

__all__ = [
    "FORMAT",
    "VERSION",
    "capture_mode",
    "distill",
    "example_inputs",
    "families",
    "from_pretrained",
    "save_pretrained",
    "trace",
]
