"""Writes the results: `latest.json` (every figure with its floor and ratio, and the machine),
`latest.md` (a Markdown table) and `latencies.png` (the latency distributions)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.common import RESULTS, Figure


def _clean(value: Any) -> Any:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_json(
    figures: list[Figure],
    failures: dict[str, str],
    machine: dict[str, Any],
    elapsed_s: float,
    path: Path = RESULTS / "latest.json",
) -> Path:
    document = {
        "machine": machine,
        "elapsed_s": round(elapsed_s, 1),
        "figures": {f.key: f.to_json() for f in figures},
        "failures": failures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(document), indent=2) + "\n")
    return path


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("; ", "<br>")


def write_markdown(
    figures: list[Figure],
    failures: dict[str, str],
    machine: dict[str, Any],
    chart: Path | None,
    path: Path = RESULTS / "latest.md",
) -> Path:
    lines = [
        "# botfleet benchmark",
        "",
        f"{machine['date']} · {machine['nproc']} CPU ({machine['cpu'] or 'unknown'}) ·"
        f" {machine['memory_gib']} GiB · Python {machine['python']} · Docker"
        f" {machine['docker'] or 'n/a'} · {machine['postgresql'] or 'PostgreSQL'}",
        "",
        "Every figure is measured beside its physical floor in the same run; the ratio is"
        " figure / floor (for throughput, figure rate / floor rate). `make bench` regenerates"
        " this file, `latest.json` and the chart.",
        "",
        "| Figure | Measured | Floor | Ratio |",
        "|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {_cell(f.title)} | {_cell(f.measured)} | {_cell(f.floor_text)}"
            f" | {_cell(f.ratio_text)} |"
        )
    for key, error in failures.items():
        lines.append(f"| {key} | not measured: {_cell(error)} | | |")
    if chart is not None:
        lines += ["", f"![latency distributions]({chart.name})"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_chart(figures: list[Figure], path: Path = RESULTS / "latencies.png") -> Path | None:
    """Empirical CDFs (log time axis) of each latency figure beside its floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = [f for f in figures if f.samples.get("manager")]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, figure in zip(axes[0], panels, strict=True):
        for name, style in (("manager", "-"), ("floor", "--")):
            data = sorted(s * 1000 for s in figure.samples.get(name, []))
            if not data:
                continue
            ys = [(i + 1) / len(data) for i in range(len(data))]
            ax.step(data, ys, style, where="post", label=f"{name} (n={len(data)})")
        ax.set_xscale("log")
        plain = FuncFormatter(lambda x, _: f"{x:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction ≤ x")
        ax.set_title(figure.title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
