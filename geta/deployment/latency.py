"""A per-layer latency table measured on this machine, for latency budgets
(:meth:`geta.Budget.latency`), in the manner of AMC and HAQ: every quantizable layer is timed
on its own, on the kernel :func:`geta.deploy` gives it at each weight width (float, 8-bit,
4-bit), at a few narrowed widths; a line ``t = slope x nonzeros + intercept`` is fitted per
(layer, width) and the whole dense model is timed to calibrate what the layers leave out
(activations, pooling, the framework). The table is cached per machine, threads, torch version
and model shape under :func:`geta.data.cache.cache_dir` ``/latency``.

Layers are narrowed by a registry keyed by module type (:func:`register_narrowing`; linear,
convolution and embedding are built in); a layer of a type it does not know is timed at full
width only and its time taken as proportional to its weights.

Example:
    >>> table = LatencyTable.measure(model, (x,), batch=1)               # doctest: +SKIP
    >>> table.dense_ms, table.layers["fc1"].slope                       # doctest: +SKIP
    (1.73, {32: 1.1e-06, 8: 4.0e-07})
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geta.data.cache import cache_dir
from geta.deployment.torch_backend import DeployConfig, QuantizedWeight, _converter
from geta.errors import ConfigError
from geta.quant.prepare import QuantizableLayer, attach_input_quantizer, quantizable_layers
from geta.quant.quantizer import Quantizer

__all__ = [
    "LatencyTable",
    "LayerLatency",
    "kernel_width",
    "register_narrowing",
    "time_call",
    "timed_inputs",
]

FRACTIONS = (1.0, 0.5, 0.25)  # shares of a layer's weights it is timed at
HALF = 0.5  # the share of every group's units the pruned whole model keeps
FLOAT_WIDTH = 32
VERSION = 4

# (module, keep fraction of its weights, its input) -> (narrowed module, narrowed input)
Narrowing = Callable[[nn.Module, float, torch.Tensor], tuple[nn.Module, torch.Tensor]]
_NARROWINGS: list[tuple[type, Narrowing]] = []


def register_narrowing(module_type: type) -> Callable[[Narrowing], Narrowing]:
    """Register how a layer of ``module_type`` is rebuilt with about ``fraction`` of its
    weights (and its input cut to match), to time it narrowed. The most recent registration
    wins.

    Example:
        >>> @register_narrowing(MyLinear)                                   # doctest: +SKIP
        ... def _(module, fraction, x):
        ...     out = max(1, round(module.out_features * fraction))
        ...     return MyLinear(module.in_features, out), x
    """

    def decorate(fn: Narrowing) -> Narrowing:
        _NARROWINGS.insert(0, (module_type, fn))
        return fn

    return decorate


def _scaled(n: int, factor: float, multiple: int = 1) -> int:
    return max(multiple, int(round(n * factor / multiple)) * multiple)


@register_narrowing(nn.Linear)
def _narrow_linear(module: nn.Linear, fraction: float, x: torch.Tensor):
    s = math.sqrt(fraction)
    n_in, n_out = _scaled(module.in_features, s), _scaled(module.out_features, s)
    new = nn.Linear(n_in, n_out, bias=module.bias is not None)
    return new, x[..., :n_in]


@register_narrowing(nn.modules.conv._ConvNd)
def _narrow_conv(module: nn.modules.conv._ConvNd, fraction: float, x: torch.Tensor):
    g = module.groups
    if g > 1 and g == module.in_channels:  # depthwise: the weights follow the channels
        c = _scaled(module.in_channels, fraction)
        n_in, n_out, g = c, c * (module.out_channels // module.in_channels), c
    else:
        s = math.sqrt(fraction)
        n_in, n_out = _scaled(module.in_channels, s, g), _scaled(module.out_channels, s, g)
    kwargs = dict(
        kernel_size=module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=g,
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
    )
    if module.transposed:
        kwargs["output_padding"] = module.output_padding
    return type(module)(n_in, n_out, **kwargs), x[:, :n_in]


@register_narrowing(nn.Embedding)
def _narrow_embedding(module: nn.Embedding, fraction: float, x: torch.Tensor):
    dim = _scaled(module.embedding_dim, fraction)
    return nn.Embedding(module.num_embeddings, dim, padding_idx=module.padding_idx), x


def _narrowing(module: nn.Module) -> Narrowing | None:
    return next((fn for t, fn in _NARROWINGS if isinstance(module, t)), None)


def kernel_width(bits: float, config: DeployConfig | None = None) -> int:
    """The kernel width (4, 8 or 32 = float) :func:`geta.deploy` gives a layer of ``bits``
    under ``config`` (codes assumed to fit their bits)."""
    config = config or DeployConfig()
    if config.weights == "float" or bits > 8:
        return FLOAT_WIDTH
    return 4 if bits <= 4 and config.weights != "int8" else 8


def time_call(fns: dict[Any, Callable[[], object]], repeats: int, device: str = "cpu"):
    """Median seconds per call of each function, the functions taking turns ``repeats`` times
    after a warm-up call each; a call shorter than 0.2 ms is repeated within one sample."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    inner: dict[Any, int] = {}
    with torch.no_grad():
        for key, fn in fns.items():
            fn()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            inner[key] = max(1, min(100, int(2e-4 / max(time.perf_counter() - start, 1e-7))))
        samples: dict[Any, list[float]] = {key: [] for key in fns}
        for _ in range(repeats):
            for key, fn in fns.items():
                start = time.perf_counter()
                for _ in range(inner[key]):
                    fn()
                sync()
                samples[key].append((time.perf_counter() - start) / inner[key])
    return {key: statistics.median(s) for key, s in samples.items()}


def timed_inputs(args: tuple, kwargs: dict, batch: int) -> tuple[tuple, dict]:
    """The example inputs with ``batch`` rows: every tensor whose first dim is the example's
    batch is cycled along it to ``batch`` rows."""
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor) and t.dim()]
    if not tensors:
        return args, kwargs
    n = tensors[0].shape[0]

    def grow(t):
        if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == n and n != batch:
            return t[torch.arange(batch) % n]
        return t

    return tuple(grow(a) for a in args), {k: grow(v) for k, v in kwargs.items()}


@dataclass
class LayerLatency:
    """One layer's fitted time per kernel width: ``slope[w] * nonzeros + intercept[w]``
    milliseconds per forward (``calls`` calls of the layer included), and the kernel name
    :func:`geta.deploy` used at each width. ``output_ms`` is the time between layers that one
    kept output feature of the layer brings (the normalisation, activation, residual add or
    attention product its output feeds), of ``outputs`` features."""

    name: str
    numel: int
    calls: int
    slope: dict[int, float]
    intercept: dict[int, float]
    kernels: dict[int, str] = field(default_factory=dict)
    outputs: int = 0
    output_ms: float = 0.0

    def ms(self, width: int, nonzeros: float) -> float:
        return self.slope[width] * nonzeros + self.intercept[width]


@dataclass
class LatencyTable:
    """Per-layer latency on one machine (see the module docstring): what a latency budget's
    cost model reads. ``dense_ms`` is the measured dense fp32 model, ``fixed_ms`` the part of
    it outside the counted layers; ``scale`` the calibration applied to each width's layer
    times so that the whole model at that width, timed too, is predicted exactly."""

    device: str
    batch: int
    threads: int
    config: dict[str, Any]
    dense_ms: float
    fixed_ms: float
    scale: dict[int, float]
    layers: dict[str, LayerLatency]
    machine: str = ""
    model_ms: dict[int, float] = field(default_factory=dict)  # whole model, layers at a width

    # ------------------------------------------------------------ queries
    @property
    def deploy_config(self) -> DeployConfig:
        """The :func:`geta.deploy` settings the table was timed with: deploy with them."""
        return DeployConfig(**self.config)

    def widths(self, name: str) -> list[int]:
        return sorted(self.layers[name].slope)

    def slope(self, name: str, bits: float) -> float:
        """Milliseconds per nonzero weight of layer ``name`` at ``bits``: the slope of the
        kernel those bits deploy to (float when the layer was only timed in float)."""
        layer = self.layers[name]
        width = kernel_width(bits, DeployConfig(**self.config))
        return layer.slope.get(width, layer.slope[FLOAT_WIDTH])

    def intercept(self, name: str, bits: float) -> float:
        layer = self.layers[name]
        width = kernel_width(bits, DeployConfig(**self.config))
        return layer.intercept.get(width, layer.intercept[FLOAT_WIDTH])

    def predict(
        self,
        nonzeros: dict[str, float],
        bits: dict[str, float],
        outputs: dict[str, float] | None = None,
    ) -> float:
        """Predicted milliseconds of a model whose layers keep ``nonzeros`` at ``bits`` and
        ``outputs`` output features (all of them where not given)."""
        total = self.fixed_ms
        for name, layer in self.layers.items():
            b = bits.get(name, FLOAT_WIDTH)
            total += self.slope(name, b) * nonzeros.get(name, layer.numel)
            total += self.intercept(name, b)
            total += layer.output_ms * (outputs or {}).get(name, layer.outputs)
        return total

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        data = dict(data)
        if data.pop("version", None) != VERSION:
            raise ValueError("latency table of another version")
        for key in ("scale", "model_ms"):
            data[key] = {int(w): v for w, v in data.get(key, {}).items()}
        layers = {}
        for name, row in data.pop("layers").items():
            row = dict(row)
            for key in ("slope", "intercept", "kernels"):
                row[key] = {int(w): v for w, v in row[key].items()}
            layers[name] = LayerLatency(**row)
        return cls(layers=layers, **data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ------------------------------------------------------------ measuring
    @classmethod
    def measure(
        cls,
        model: nn.Module,
        example_inputs: tuple,
        example_kwargs: dict | None = None,
        *,
        batch: int = 1,
        device: str = "cpu",
        bit_options: Sequence[float] = (2, 8),
        quantized: Callable[[QuantizableLayer], bool] = lambda layer: not layer.kind.embedding,
        per_channel: bool = False,
        activations: bool = False,
        config: DeployConfig | None = None,
        repeats: int = 7,
        cache: bool | str | Path = True,
        pruned: Callable[[nn.Module, float], nn.Module] | None = None,
    ) -> LatencyTable:
        """Time ``model`` (float, not yet prepared) and each of its quantizable layers on
        ``device`` with ``batch`` rows of input, at the kernel widths ``bit_options`` can
        deploy to (float for layers ``quantized`` rejects), under :func:`geta.deploy`'s
        ``config`` (by default the fastest of :class:`DeployConfig`'s ``weights`` choices by
        the timings, see :func:`_fastest_weights`: :attr:`deploy_config` says which).
        ``per_channel`` / ``activations`` are the quantizers the compression will put on the
        layers (they choose the kernels). ``cache``: ``True`` reads and writes the
        machine's cache, a path a given file, ``False`` none. ``pruned(model, 0.5)``, when
        given, returns a copy of the model with every group at half its units: timed too, it
        tells how much of the time outside the layers shrinks with them (normalisation,
        activations, attention products), which then counts per kept output feature of the
        layer whose output it processes (:attr:`LayerLatency.output_ms`), in proportion to the
        elements of that output, instead of as fixed.

        Raises:
            ConfigError: ``device`` is not available here.
        """
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"latency on {device!r} needs a CUDA device; none is available")
        if device != "cpu" and not device.startswith("cuda"):
            raise ConfigError(f"latency is measured on 'cpu' or 'cuda', not {device!r}")
        choose = config is None
        config = config or DeployConfig()
        kwargs = dict(example_kwargs or {})
        args, kwargs = timed_inputs(tuple(example_inputs), kwargs, batch)
        layers = quantizable_layers(model)
        widths = sorted({kernel_width(b, config) for b in bit_options} | {FLOAT_WIDTH})
        plan = {layer.name: widths if quantized(layer) else [FLOAT_WIDTH] for layer in layers}
        signature = _signature(model, args, kwargs, layers, plan, device, batch, config)
        signature.update(
            per_channel=per_channel, activations=activations, choose=choose, pruned=bool(pruned)
        )
        path = _cache_path(signature) if cache is True else (Path(cache) if cache else None)
        if path is not None and path.is_file():
            try:
                return cls.load(path)
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                pass  # a stale or broken cache entry: measure again
        table = _measure(
            model,
            args,
            kwargs,
            layers,
            plan,
            device,
            batch,
            config,
            per_channel,
            activations,
            repeats,
            pruned(model, HALF) if pruned is not None else None,
        )
        if choose:
            table = _fastest_weights(table)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            table.save(path)
        return table


def _fastest_weights(table: LatencyTable) -> LatencyTable:
    """Choose the weight kernels a latency budget plans and deploys with, from the timings:

    - where the whole model on the 8-bit kernels is no faster than in float (weight-only
      codes dequantized at every call: convolutions on CPUs), float weights
      (``DeployConfig(weights="float")``, the learned bits then buy size on disk, not time);
    - else, where the int4 kernels are slower than the int8 ones at full width summed over
      the layers (weight-only int4 unpacks at every call), int8 for every layer of 8 bits or
      fewer (``weights="int8"``: 4-bit codes fit in it, and lower bits never cost more time).
    """
    if 8 in table.model_ms and table.model_ms[8] >= table.model_ms[FLOAT_WIDTH]:
        return _keep_widths(table, {FLOAT_WIDTH}, "float")
    rows = [r for r in table.layers.values() if 4 in r.slope and 8 in r.slope]
    if rows and sum(r.ms(4, r.numel) for r in rows) > sum(r.ms(8, r.numel) for r in rows):
        return _keep_widths(table, {8, FLOAT_WIDTH}, "int8")
    return table


def _keep_widths(table: LatencyTable, widths: set[int], weights: str) -> LatencyTable:
    for r in table.layers.values():
        for part in (r.slope, r.intercept, r.kernels):
            for w in set(part) - widths:
                del part[w]
    for part in (table.model_ms, table.scale):
        for w in set(part) - widths:
            del part[w]
    table.config = {**table.config, "weights": weights}
    return table


def _machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def _signature(model, args, kwargs, layers, plan, device, batch, config) -> dict[str, Any]:
    shapes = [list(t.shape) for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    return {
        "version": VERSION,
        "machine": _machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "batch": batch,
        "config": asdict(config),
        "model": type(model).__name__,
        "inputs": shapes,
        "layers": [
            [layer.name, type(layer.module).__name__, list(layer.weight.shape), plan[layer.name]]
            for layer in layers
        ],
    }


def _cache_path(signature: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(signature, sort_keys=True, default=str).encode()).hexdigest()
    return cache_dir() / "latency" / f"{key[:32]}.json"


def _layer_inputs(
    model, args, kwargs, layers
) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, float]]:
    """Each layer's first input, how many times it runs per forward, and the output elements
    per output feature it makes per forward (all calls together)."""
    seen: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    elements: dict[str, float] = {}
    handles = []
    for layer in layers:

        def pre_hook(module, inputs, name=layer.name):
            calls[name] = calls.get(name, 0) + 1
            if name not in seen and inputs and isinstance(inputs[0], torch.Tensor):
                seen[name] = inputs[0].detach().clone()

        def hook(module, inputs, output, name=layer.name, layer=layer):
            if isinstance(output, torch.Tensor):
                features = layer.weight.shape[layer.kind.output_axis]
                elements[name] = elements.get(name, 0.0) + output.numel() / max(features, 1)

        handles.append(layer.module.register_forward_pre_hook(pre_hook))
        handles.append(layer.module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return seen, calls, elements


def _deployed(
    module: nn.Module,
    layer: QuantizableLayer,
    width: int,
    per_channel: bool,
    activations: bool,
    config: DeployConfig,
) -> tuple[nn.Module, str]:
    """``module`` as :func:`geta.deploy` runs it at ``width`` (random codes of that width);
    with quantized ``activations``, a kernel that does not quantize its inputs itself keeps
    the (fake) input quantizer, as :func:`geta.deploy` leaves it."""
    fn = _converter(module) if width != FLOAT_WIDTH else None
    if fn is None:
        run, kernel = module, "float"
    else:
        weight = getattr(module, layer.kind.param).detach()
        axis = layer.kind.channel_axis % weight.dim()
        top = 1 << (width - 1)
        channels = weight.shape[axis] if per_channel else 1
        codes = QuantizedWeight(
            torch.randint(-top, top, weight.shape, dtype=torch.int64),
            torch.rand(channels) * 0.01 + 1e-3,
            axis,
            torch.full((channels,), width, dtype=torch.int64),
            8.0 if activations else None,
        )
        run, kernel = fn(module, codes, config)
    if activations and width != FLOAT_WIDTH and kernel != "int8-dynamic":
        if not layer.kind.embedding:
            q = Quantizer(1)
            with torch.no_grad():
                q.q_m.fill_(6.0)
                q.set_bits(8)
            attach_input_quantizer(run, q)
    return run, kernel


def _fit(nonzeros: list[float], seconds: list[float]) -> tuple[float, float]:
    """Least-squares ``ms = slope * nonzeros + intercept`` (slope >= 0, intercept >= 0)."""
    x, y = np.asarray(nonzeros, float), np.asarray(seconds, float) * 1e3
    if len(set(x.tolist())) < 2:
        return float(y.mean() / max(x.mean(), 1.0)), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    if slope <= 0 or intercept < 0:  # noise: a line through the origin instead
        return float((x * y).sum() / (x * x).sum()), 0.0
    return float(slope), float(intercept)


@torch.no_grad()
def _measure(
    model, args, kwargs, layers, plan, device, batch, config, per_channel, activations, repeats,
    half=None,
) -> LatencyTable:  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        inputs, calls, elements = _layer_inputs(model, args, kwargs, layers)
        runners: dict[tuple[str, str, float], Callable[[], object]] = {}
        nonzeros: dict[tuple[str, str, float], float] = {}
        kernels: dict[tuple[str, int], str] = {}
        for layer in layers:
            x = inputs.get(layer.name)
            if x is None:
                continue
            narrow = _narrowing(layer.module)
            for fraction in FRACTIONS if narrow is not None else (1.0,):
                for width in plan[layer.name]:
                    # a fresh module per kernel: converters may take the float module over
                    base, sx = (
                        narrow(layer.module, fraction, x)
                        if fraction < 1
                        else (copy.deepcopy(layer.module), x)
                    )
                    numel = float(getattr(base, layer.kind.param).numel())
                    run, kernel = _deployed(
                        base.eval(), layer, width, per_channel, activations, config
                    )
                    kernels[(layer.name, width)] = kernel
                    key = (layer.name, kernel, fraction)  # widths sharing a kernel time once
                    if key not in runners:
                        run, feed = run.eval().to(device), sx.to(device)
                        runners[key] = lambda run=run, feed=feed: run(feed)
                        nonzeros[key] = numel
        dargs = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        dkwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        whole = {FLOAT_WIDTH: model.to(device)}
        for width in sorted({w for ws in plan.values() for w in ws} - {FLOAT_WIDTH}):
            whole[width] = _whole_at(model, layers, inputs, plan, width, per_channel, activations,
                                     config).to(device)  # fmt: skip
        for width, m in whole.items():
            runners[("__model__", str(width), 0.0)] = lambda m=m: m(*dargs, **dkwargs)
        if half is not None:
            half = half.eval().to(device)
            runners[("__model__", "half", 0.0)] = lambda: half(*dargs, **dkwargs)
        seconds = time_call(runners, repeats, device)
    finally:
        model.train(was_training)
    model_ms = {w: seconds.pop(("__model__", str(w), 0.0)) * 1e3 for w in whole}
    pruned_ms = None
    if half is not None:
        pruned_ms = seconds.pop(("__model__", "half", 0.0)) * 1e3
        half_layers = quantizable_layers(half)
        half_numel = {layer.name: layer.weight.numel() for layer in half_layers}
        half_outputs = {
            layer.name: layer.weight.shape[layer.kind.output_axis] for layer in half_layers
        }
    dense_ms = model_ms[FLOAT_WIDTH]
    rows: dict[str, LayerLatency] = {}
    for layer in layers:
        if layer.name not in inputs:
            continue
        n = calls.get(layer.name, 1)
        slope, intercept = {}, {}
        for width in plan[layer.name]:
            kernel = kernels[(layer.name, width)]
            keys = [k for k in seconds if k[0] == layer.name and k[1] == kernel]
            a, b = _fit([nonzeros[k] for k in keys], [seconds[k] for k in keys])
            slope[width], intercept[width] = a * n, b * n
        kern = {w: kernels[(layer.name, w)] for w in plan[layer.name]}
        rows[layer.name] = LayerLatency(
            layer.name,
            int(layer.weight.numel()),
            n,
            slope,
            intercept,
            kern,
            outputs=int(layer.weight.shape[layer.kind.output_axis]),
        )
    pruned = (half_numel, half_outputs, pruned_ms) if half is not None else None
    fixed_ms, scale = _calibrate(rows, model_ms, pruned, elements)
    return LatencyTable(
        device=device,
        batch=batch,
        threads=torch.get_num_threads(),
        config=asdict(config),
        dense_ms=dense_ms,
        fixed_ms=fixed_ms,
        scale=scale,
        layers=rows,
        machine=_machine(),
        model_ms=model_ms,
    )


def _whole_at(model, layers, inputs, plan, width, per_channel, activations, config) -> nn.Module:
    """A copy of ``model`` with every layer timed at ``width`` on that width's kernel (random
    codes), the others float: what the whole model takes with those kernels."""
    copied = copy.deepcopy(model).eval()
    for layer in layers:
        if width not in plan[layer.name] or layer.name not in inputs:
            continue
        module = copied.get_submodule(layer.name)
        run, _ = _deployed(module, layer, width, per_channel, activations, config)
        if run is not module:
            parent, _, attr = layer.name.rpartition(".")
            setattr(copied.get_submodule(parent) if parent else copied, attr, run)
    return copied.eval()


def _calibrate(
    rows: dict[str, LayerLatency],
    model_ms: dict[int, float],
    pruned: tuple[dict[str, int], dict[str, int], float] | None = None,
    elements: dict[str, float] | None = None,
) -> tuple[float, dict[int, float]]:
    """Calibrate the isolated layer times on whole-model times (isolated layers run with warm
    caches and miss the time between layers):

    - the dense float model: its time outside the layers is the rest;
    - with ``pruned`` (the weights and output features of each layer, and the time of the
      model with every group at half its units), the part of the rest that shrank with the
      layers (normalisation, activations, attention products: work on the layers' outputs)
      becomes time per kept output feature (:attr:`LayerLatency.output_ms`), one rate per
      output element (``elements``: each layer's output elements per feature, 1 each when
      not given); what did not shrink stays ``fixed``. Per output feature, not per weight:
      a layer cut on both sides loses weights as the product of the two cuts, but its
      output (and the work on it) only as its own;
    - the model with every layer at each width, wide to narrow: that width's kernel times are
      scaled so it is predicted exactly. A layer whose kernel is the same at a narrower width
      (int8 dynamic at 4 and 8 bits) keeps the time it has, and the narrower width's scale is
      solved over the layers whose kernel changed.

    Returns the fixed milliseconds and the scale per width."""
    dense_ms = model_ms[FLOAT_WIDTH]
    float_ms = sum(r.ms(FLOAT_WIDTH, r.numel) for r in rows.values())
    scale = {FLOAT_WIDTH: min(1.0, dense_ms / float_ms) if float_ms > 0 else 1.0}
    for r in rows.values():
        r.slope[FLOAT_WIDTH] *= scale[FLOAT_WIDTH]
        r.intercept[FLOAT_WIDTH] *= scale[FLOAT_WIDTH]
    rest = max(0.0, dense_ms - float_ms * scale[FLOAT_WIDTH])
    per_feature = {n: float((elements or {}).get(n, 1.0)) for n in rows}  # output elements
    rate = 0.0  # rest per output element
    if pruned is not None:
        numel, outputs, half_ms = pruned
        full = sum(per_feature[n] * r.outputs for n, r in rows.items())
        small = sum(per_feature[n] * outputs.get(n, r.outputs) for n, r in rows.items())
        half_layers = sum(r.ms(FLOAT_WIDTH, numel.get(r.name, r.numel)) for r in rows.values())
        if full > small:
            shrank = rest - (half_ms - half_layers)
            rate = min(max(shrank / (full - small), 0.0), rest / full)
    for n, r in rows.items():
        r.output_ms = rate * per_feature[n]
    fixed = rest - sum(r.output_ms * r.outputs for r in rows.values())
    done = [FLOAT_WIDTH]
    for width in sorted(set(model_ms) - {FLOAT_WIDTH}, reverse=True):
        known, fresh = sum(r.output_ms * r.outputs for r in rows.values()), []
        for r in rows.values():
            if width not in r.slope:
                known += r.ms(FLOAT_WIDTH, r.numel)
                continue
            same = next((w for w in done if r.kernels.get(w) == r.kernels[width]), None)
            if same is not None:
                r.slope[width], r.intercept[width] = r.slope[same], r.intercept[same]
                known += r.ms(width, r.numel)
            else:
                fresh.append(r)
        fresh_ms = sum(r.ms(width, r.numel) for r in fresh)
        left = model_ms[width] - fixed - known
        scale[width] = left / fresh_ms if fresh_ms > 0 and left > 0 else 1.0
        for r in fresh:
            r.slope[width] *= scale[width]
            r.intercept[width] *= scale[width]
        done.append(width)
    return max(0.0, fixed), scale
