"""Rendering: a Rich table per scenario, a summary table, and the JSON file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from payguard.race.stats import percentile, summarize
from payguard.race.types import RaceReport, ScenarioResult, ScenarioStatus

__all__ = ["faults_text", "render", "scenario_table", "summary_table", "write_json"]

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
    for kind in ("safety", "liveness"):
        for inv in (i for i in result.invariants if i.kind == kind):
            mark = (Text("held   ", style="green") if inv.held
                    else Text("BROKEN ", style="bold red"))
            table.add_row(Text.assemble(f"{kind:<8} ", mark, inv.name), inv.evidence)
    return table


def _seconds(values: list[float]) -> str:
    """``max / p99`` in seconds, or ``-`` when no request met a fault."""
    if not values:
        return "-"
    return f"{max(values):.1f} / {percentile(values, 99):.1f}"


def summary_table(report: RaceReport) -> Table:
    table = Table(title=f"payguard race: {report.target}", show_header=True)
    table.add_column("scenario", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for col in ("reqs", "safety", "liveness", "unfinished", "recovery s max/p99",
                "settle s", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in report.results:
        s = summarize(r.samples, r.duration)
        timing = (
            [f"{v * 1000:.0f}" for v in (s.p50, s.p99, s.max)] if s.requests else ["-"] * 3
        )
        settle = r.liveness.settle
        table.add_row(
            r.name, Text(r.status.value, style=_STYLE[r.status]), str(s.requests),
            _held(r, "safety"), _held(r, "liveness"),
            str(r.liveness.unfinished) if r.invariants else "-",
            _seconds(r.liveness.recovery), f"{settle:.1f}" if settle is not None else "-",
            *timing,
        )
    safe = all(r.safety_held for r in report.results)
    live = all(r.liveness_held for r in report.results)
    verdict = ("all invariants held: safety and liveness" if report.ok else
               f"BROKEN: safety {'held' if safe else 'VIOLATED'}, "
               f"liveness {'held' if live else 'FAILED'}"
               + (", fault injection failed" if report.fault_errors else ""))
    table.caption = Text(verdict, style="bold green" if report.ok else "bold red")
    return table


def _held(result: ScenarioResult, kind: str) -> str:
    of_kind = [i for i in result.invariants if i.kind == kind]
    return f"{sum(i.held for i in of_kind)}/{len(of_kind)}" if of_kind else "-"


def faults_text(report: RaceReport) -> Text:
    """Faults injected, and recovery from them over the whole run."""
    counts = Counter(e.fault for e in report.faults)
    lines = [f"faults injected: {', '.join(f'{n} x {k}' for k, n in counts.items())}"]
    lines += [f"  {e}" for e in report.faults[:8]]
    if len(report.faults) > 8:
        lines.append(f"  ... and {len(report.faults) - 8} more")
    lines += [f"  FAILED: {e}" for e in report.fault_errors]
    rec, settles = report.recovery(), report.settles()
    if rec:
        lines.append(f"time from the last fault to a request's final answer: max "
                     f"{max(rec):.2f} s, p99 {percentile(rec, 99):.2f} s "
                     f"({len(rec)} requests met a fault)")
    if settles:
        lines.append(f"time from the last fault to convergence (per scenario): max "
                     f"{max(settles):.2f} s, p99 {percentile(settles, 99):.2f} s")
    return Text("\n".join(lines))


def render(report: RaceReport, console: Console) -> None:
    parts: list[Table | Text] = [scenario_table(r) for r in report.results]
    if report.faults or report.fault_errors:
        parts.append(faults_text(report))
    if report.notes:
        parts.append(Text("\n".join(report.notes)))
    parts.append(summary_table(report))
    console.print(Group(*parts))


def write_json(report: RaceReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
