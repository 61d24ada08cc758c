"""Speedup over eager + original against sequence length, one panel per measure, as in the
FGI paper's figures. Needs matplotlib (``pip install 'fgirewrite[plot]'``)."""

from __future__ import annotations

from pathlib import Path

from fgirewrite.bench.config import MEASURE_TITLES, MEASURES, MODES, VARIANT_TITLES

COLORS = {
    "eager": "tab:gray",
    "script": "tab:blue",
    "compile": "tab:orange",
    "compile-fullgraph": "tab:green",
}
STYLES = {"original": "--", "fgi": "-"}
MARKERS = {"original": "o", "fgi": "s"}


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def save(doc: dict, path: Path) -> Path:
    """Write the figure to ``path`` (PNG); PlotUnavailable without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'fgirewrite[plot]'") from exc
    lengths = doc["settings"]["lengths"]
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(5 * len(MEASURES), 4.2), sharey=False)
    for ax, measure in zip(axes, MEASURES, strict=True):
        for mode in (m for m in MODES if m in doc["settings"]["modes"]):
            for variant in ("original", "fgi"):
                points = [
                    (r["length"], r["timings"][measure]["speedup_vs_eager_original"])
                    for r in doc["results"]
                    if r["mode"] == mode
                    and r["variant"] == variant
                    and r["timings"][measure]["status"] == "ok"
                ]
                if not points:
                    continue
                xs, ys = zip(*sorted(points), strict=True)
                ax.plot(
                    xs,
                    ys,
                    STYLES[variant],
                    marker=MARKERS[variant],
                    color=COLORS[mode],
                    label=f"{mode}, {VARIANT_TITLES[variant]}",
                )
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("sequence length T")
        ax.set_title(MEASURE_TITLES[measure])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup over eager, original")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize="small", frameon=False)
    env = doc["environment"]
    fig.suptitle(
        f"{Path(doc['model']['path']).name}: {env['device']} ({env['device_name']}), "
        f"{env['threads']} thread(s), torch {env['torch']}",
        fontsize="medium",
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
