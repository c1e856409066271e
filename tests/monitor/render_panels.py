"""Render the dashboard's main panels to a PNG from a real Prometheus during a demo run.

``python -m tests.monitor.render_panels [--seconds 90] [--out deploy/grafana/dashboard.png]``
(or ``make dashboard-png``) starts what the live monitoring tests start
(:mod:`tests.monitor.stack`: a broker of its own, the simulator, two worker
processes, Prometheus scraping them with the chart's scrape job), lets the
fleet stream (after a warm-up), SIGKILLs worker w2 at 40 % of the run and starts it again at
60 %, then asks Prometheus for each main panel's queries over the run (as
Grafana would send them for that time range) and draws them with
matplotlib. The picture shows what an operator sees: steady flow, the
takeover of w2's shards, latency and heartbeat age around it.

Needs the ``plot`` extra (``pip install -e '.[plot]'``), Java for the broker,
and ``/usr/bin/prometheus``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.monitor.grafana import Target, fill_variables, panel_targets
from tests.monitor.stack import REPO, SCRAPE_INTERVAL_S, MonitoredFleet, monitored_fleet

__all__ = ["MAIN_PANELS", "main", "render"]

DEFAULT_SECONDS = 90.0
DEFAULT_OUT = REPO / "deploy" / "grafana" / "dashboard.png"
#: The panels drawn, in reading order (titles of helm/presence-bridge/files/dashboard.json).
MAIN_PANELS = (
    "Changes/s by kind",
    "Records produced/s by topic",
    "Delivery latency p50 / p99",
    "Event lag p50 / p99",
    "Shards owned vs connected",
    "Subscribed topics and users by shard",
    "Heartbeat age by shard",
    "Genesys requests by status and rate limiting",
)
#: The first reconciliation reports every agent's state with its old changedAt (lag in
#: minutes); the picture starts after it.
WARMUP_S = 15.0
KILL_AT = 0.4
RESTART_AT = 0.6
COLUMNS = 2
DPI = 72
_LEGEND_VAR = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def _legend(target: Target, labels: dict[str, str]) -> str:
    text = _LEGEND_VAR.sub(lambda m: labels.get(m.group(1), ""), target.legend)
    return text or target.expr[:40]


def _demo(m: MonitoredFleet, seconds: float) -> None:
    start = time.monotonic()

    def at(fraction: float) -> None:
        time.sleep(max(0.0, start + seconds * fraction - time.monotonic()))

    at(KILL_AT)
    m.worker("w2").kill()
    at(RESTART_AT)
    m.start_worker("w2")
    at(1.0)


def render(m: MonitoredFleet, start: float, end: float, out: Path) -> None:
    """Draw :data:`MAIN_PANELS` for [start, end] (epoch seconds) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = fill_variables(m.chart.dashboard, m.prometheus.label_values)
    targets = panel_targets(m.chart.dashboard, values, SCRAPE_INTERVAL_S, range_s=end - start)
    by_panel: dict[str, list[Target]] = {}
    for target in targets:
        by_panel.setdefault(target.panel, []).append(target)
    missing = [title for title in MAIN_PANELS if title not in by_panel]
    if missing:
        raise SystemExit(f"panels not in the dashboard: {missing}")
    rows = -(-len(MAIN_PANELS) // COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(12, 2.6 * rows), sharex=True)
    fig.patch.set_facecolor("#181b1f")
    for ax, title in zip(axes.flat, MAIN_PANELS, strict=True):
        ax.set_facecolor("#111217")
        ax.set_title(title, color="#d8d9da", fontsize=10, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        ax.grid(color="#2c3235", linewidth=0.6)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        for target in by_panel[title]:
            for series in m.prometheus.query_range(target.expr, start, end, SCRAPE_INTERVAL_S):
                points: list[Any] = series["values"]
                xs = [float(t) - start for t, _ in points]
                ys = [float(v) for _, v in points]
                ax.plot(xs, ys, linewidth=1.2, label=_legend(target, series["metric"]))
        for fraction, what in ((KILL_AT, "w2 SIGKILL"), (RESTART_AT, "w2 back")):
            x = (end - start) * fraction
            ax.axvline(x, color="#f2495c", linewidth=0.8, linestyle="--")
            ax.text(
                x, 1.0, f" {what}", color="#f2495c", fontsize=7, transform=ax.get_xaxis_transform(), va="top"
            )
        ax.set_ylim(bottom=0)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left", ncol=3, framealpha=0.3, labelcolor="#d8d9da")
    for ax in axes[-1]:
        ax.set_xlabel("seconds into the demo run", color="#8e8e8e", fontsize=8)
    fig.suptitle(
        "presence-bridge dashboard: main panels from a live Prometheus", color="#d8d9da", fontsize=12
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor=fig.get_facecolor())
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of the demo run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="render-panels-") as tmp, monitored_fleet(Path(tmp)) as m:
        time.sleep(WARMUP_S)
        start = time.time()
        _demo(m, args.seconds)
        render(m, start, time.time(), args.out)
    size_kb = args.out.stat().st_size / 1024
    sys.stdout.write(f"wrote {args.out} ({size_kb:.0f} KB)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
