"""Rendering: a Rich table per scenario, a summary table, and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from payguard.race.stats import summarize
from payguard.race.types import RaceReport, ScenarioResult, ScenarioStatus

__all__ = ["render", "scenario_table", "summary_table", "write_json"]

_STYLE = {
    ScenarioStatus.PASSED: "bold green",
    ScenarioStatus.BROKEN: "bold red",
    ScenarioStatus.SKIPPED: "yellow",
    ScenarioStatus.ERROR: "bold magenta",
}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def scenario_table(result: ScenarioResult) -> Table:
    table = Table(title=f"{result.name}: {result.status.value.upper()}",
                  title_style=_STYLE[result.status], show_header=True, expand=False)
    table.add_column("measure / invariant", no_wrap=True)
    table.add_column("value / evidence", overflow="fold")
    if result.reason:
        table.add_row("reason", result.reason)
    s = summarize(result.samples, result.duration)
    if s.requests:
        table.add_row("requests", f"{s.requests} ({s.retries} retries)")
        for outcome, count in s.outcomes.items():
            table.add_row(f"  {outcome}", str(count))
        table.add_row("throughput", f"{s.throughput:.1f} req/s over {result.duration:.2f} s")
        table.add_row("latency p50 / p95 / p99 / max",
                      " / ".join(_ms(v) for v in (s.p50, s.p95, s.p99, s.max)))
    for inv in result.invariants:
        mark = Text("held   ", style="green") if inv.held else Text("BROKEN ", style="bold red")
        table.add_row(Text.assemble(mark, inv.name), inv.evidence)
    return table


def summary_table(report: RaceReport) -> Table:
    table = Table(title=f"payguard race: {report.target}", show_header=True)
    table.add_column("scenario", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for col in ("reqs", "invariants", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in report.results:
        s = summarize(r.samples, r.duration)
        held = sum(i.held for i in r.invariants)
        timing = (
            [f"{s.throughput:.0f}"] + [f"{v * 1000:.0f}" for v in (s.p50, s.p95, s.p99, s.max)]
            if s.requests else ["-"] * 5
        )
        table.add_row(
            r.name, Text(r.status.value, style=_STYLE[r.status]), str(s.requests),
            f"{held}/{len(r.invariants)}" if r.invariants else "-", *timing,
        )
    verdict = "all invariants held" if report.ok else "INVARIANTS BROKEN"
    table.caption = Text(verdict, style="bold green" if report.ok else "bold red")
    return table


def render(report: RaceReport, console: Console) -> None:
    parts: list[Table | Text] = [scenario_table(r) for r in report.results]
    if report.faults:
        parts.append(Text("faults injected:\n  " + "\n  ".join(report.faults)))
    parts.append(summary_table(report))
    console.print(Group(*parts))


def write_json(report: RaceReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
