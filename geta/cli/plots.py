"""The PNG plots of a ``geta compress`` run: per-layer bits and density, accuracy and loss over
training, and the measured cost against the budget over training.

Drawn with matplotlib's object API (``Figure`` + the Agg canvas): no pyplot, no global
backend, no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_layers", "plot_training", "plot_cost", "plot_search", "PLOTS", "SEARCH_PLOT"]

DPI = 110
STAGE_COLORS = {
    "warmup": "#eeeeee",
    "bit_reduction": "#dbe9f6",
    "joint": "#fde0dd",
    "cooldown": "#e5f5e0",
}


def _figure(rows: int, width: float = 7.5, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height * rows), dpi=DPI, layout="constrained")
    return fig, fig.subplots(rows, 1, squeeze=False)[:, 0]


def plot_layers(layers: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Bars of each counted layer's bits and density (share of its dense weights left)."""
    fig, (ax_bits, ax_density) = _figure(2, width=max(6.0, 0.5 * len(layers) + 3))
    names = [f"{row['name']}\n{'x'.join(map(str, row['shape']))}" for row in layers]
    x = range(len(layers))
    ax_bits.bar(x, [row["bits"] for row in layers], color="#4c72b0")
    ax_bits.set_ylabel("weight bits")
    ax_bits.set_title(title)
    ax_density.bar(x, [100 * row["density"] for row in layers], color="#dd8452")
    ax_density.set_ylabel("density (% of dense)")
    ax_density.set_ylim(0, 105)
    for ax in (ax_bits, ax_density):
        ax.set_xticks(list(x), names, rotation=45 if len(names) > 6 else 0, fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    return path


def _phase_boundary(ax, epochs: list[dict[str, Any]]) -> None:
    dense = [row["epoch"] for row in epochs if row["phase"] == "dense"]
    if dense and len(dense) < len(epochs):
        ax.axvline(max(dense), color="gray", linestyle="--", linewidth=1)


def _global_epoch(row: dict[str, Any], dense_epochs: int) -> float:
    return row["epoch"] + (dense_epochs if row["phase"] != "dense" else 0)


def plot_training(history: dict[str, Any], dense_epochs: int, path: Path, title: str) -> Path:
    """Test accuracy per epoch, and training loss (every twentieth of an epoch) with test
    loss per epoch, over the dense and the compression phases (dashed line between)."""
    fig, (ax_acc, ax_loss) = _figure(2)
    epochs, trace = history["epochs"], history["trace"]
    for phase, color in (("dense", "#4c72b0"), ("compress", "#c44e52")):
        rows = [r for r in epochs if r["phase"] == phase]
        xs = [_global_epoch(r, dense_epochs) for r in rows]
        ax_acc.plot(xs, [100 * r["test_accuracy"] for r in rows], "o-", color=color, label=phase)
        ax_loss.plot(xs, [r["test_loss"] for r in rows], "o-", color=color, label=f"{phase} test")
        fine = [r for r in trace if r["phase"] == phase]
        ax_loss.plot(
            [_global_epoch(r, dense_epochs) for r in fine],
            [r["loss"] for r in fine],
            color=color,
            alpha=0.4,
            label=f"{phase} train",
        )
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title(title)
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_xlabel("epoch")
    for ax in (ax_acc, ax_loss):
        _phase_boundary(ax, [dict(r, epoch=_global_epoch(r, dense_epochs)) for r in epochs])
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.savefig(path)
    return path


def plot_scores(
    epochs: list[dict[str, Any]],
    original: dict[str, float],
    final: dict[str, float],
    path: Path,
    title: str,
) -> Path:
    """A task's scores after each epoch (the training model, zeroed but not yet pruned) with
    the original model's (dashed) and the finished model's (a star past the last epoch), and
    the training loss per epoch."""
    fig, (ax_score, ax_loss) = _figure(2)
    xs = [row["epoch"] for row in epochs]
    for k, name in enumerate(sorted(final)):
        color = f"C{k}"
        label = name.replace("_", " ")
        ys = [row.get("scores", {}).get(name) for row in epochs]
        ax_score.plot(xs, [float("nan") if y is None else y for y in ys], "o-", color=color,
                      label=label)  # fmt: skip
        if original.get(name) is not None:
            ax_score.axhline(original[name], color=color, linestyle="--", linewidth=1,
                             label=f"{label}, original")  # fmt: skip
        ax_score.plot([xs[-1] + 0.25], [final[name]], "*", color=color, markersize=11,
                      label=f"{label}, finished")  # fmt: skip
    ax_score.set_ylabel("score (test split)")
    ax_score.set_title(title)
    ax_loss.plot(xs, [row["loss"] for row in epochs], "o-", color="#c44e52")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_xlabel("epoch")
    for ax in (ax_score, ax_loss):
        ax.grid(alpha=0.3)
    ax_score.legend(loc="best", fontsize="small")
    fig.savefig(path)
    return path


def plot_cost(
    trace: list[dict[str, Any]],
    plans: list[dict[str, Any]],
    target: float | None,
    dense_cost: float,
    steps_per_epoch: int,
    metric: str,
    path: Path,
    title: str,
) -> Path:
    """The measured cost over the compression epochs (log scale), the budget, the projections'
    planned costs, and the stages as shaded spans."""
    fig, (ax,) = _figure(1, width=9.0, height=3.8)
    scale, unit = {
        "size": (1 / 8000, "KB of weights"),
        "bops": (1e-9, "GBOPs"),
        "latency": (1.0, "ms (predicted)"),
    }[metric]
    rows = [r for r in trace if r["phase"] == "compress" and r.get("cost") is not None]
    xs = [r["epoch"] for r in rows]
    ax.plot(xs, [r["cost"] * scale for r in rows], color="#c44e52", label="measured cost")
    if target is not None:
        ax.axhline(target * scale, color="black", linestyle="--", label="budget")
    ax.axhline(dense_cost * scale, color="gray", linestyle=":", label="dense fp32")
    plans = [p for p in plans if p.get("planned_cost", p.get("cost")) is not None]
    if plans:  # GETA's plans carry planned_cost; the ADMM modes' projections their cost
        ax.plot(
            [p["step"] / steps_per_epoch for p in plans],
            [p.get("planned_cost", p.get("cost")) * scale for p in plans],
            "x",
            color="#4c72b0",
            label="planned (projection)",
        )
    start, shown = 0.0, set()
    for i, r in enumerate(rows):
        stage = r.get("stage")
        if i + 1 < len(rows) and rows[i + 1].get("stage") == stage:
            continue
        if stage in STAGE_COLORS:
            label = None if stage in shown else stage.replace("_", " ")
            ax.axvspan(start, r["epoch"], color=STAGE_COLORS[stage], zorder=0, label=label)
            shown.add(stage)
        start = r["epoch"]
    ax.set_yscale("log")
    ax.set_xlabel("compression epoch")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.savefig(path)
    return path


def plot_search(search: dict[str, Any], path: Path, title: str) -> Path:
    """A policy search (AJPQ): the reward of every episode and the best so far, and the best
    policy's channels per layer by bit-width (0 = pruned)."""
    fig, (ax_reward, ax_policy) = _figure(2, width=9.0)
    rows = search.get("history", [])
    episodes = [r["episode"] + 1 for r in rows]
    ax_reward.plot(episodes, [r["reward"] for r in rows], ".", color="#4c72b0", label="episode")
    ax_reward.plot(episodes, [r["best_reward"] for r in rows], color="#c44e52", label="best")
    ax_reward.set_xlabel("episode")
    ax_reward.set_ylabel(f"reward ({search.get('reward', '')})")
    ax_reward.set_title(title)
    ax_reward.grid(alpha=0.3)
    ax_reward.legend(fontsize="small")
    policy = search.get("policy", [])
    levels = sorted({int(b) for row in policy for b in row["bits"]})
    x = list(range(len(policy)))
    bottom = [100.0 * row["pruned"] / max(row["channels"], 1) for row in policy]
    ax_policy.bar(x, bottom, color="#bbbbbb", label="0 (pruned)")
    colors = _bit_colors(len(levels))
    for level, color in zip(levels, colors, strict=True):
        share = [100.0 * row["bits"].get(str(level), 0) / max(row["channels"], 1) for row in policy]
        ax_policy.bar(x, share, bottom=bottom, color=color, label=f"{level} bits")
        bottom = [b + v for b, v in zip(bottom, share, strict=True)]
    names = [row["layer"] for row in policy]
    ax_policy.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, fontsize="small")
    ax_policy.set_ylabel("channels (%)")
    ax_policy.set_title("best policy: channels per bit-width")
    ax_policy.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.savefig(path)
    return path


def _bit_colors(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.15 + 0.7 * i / max(count - 1, 1)) for i in range(count)]


PLOTS = {"layers": "layers.png", "training": "training.png", "cost": "cost.png"}
SEARCH_PLOT = "search.png"
