"""Benchmark results: one JSON file per benchmark in bench/results/, and their summary table."""

from __future__ import annotations

import json
import os
import platform
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    """One measured figure, the data size it was measured on and its target, if any."""

    name: str
    value: float
    unit: str
    rows: int | None = None
    target: float | None = None
    better: Literal["higher", "lower"] = "higher"

    def met(self) -> bool | None:
        """Return whether the figure reaches its target, or None when it has none."""
        if self.target is None:
            return None
        return self.value >= self.target if self.better == "higher" else self.value <= self.target


def machine() -> dict[str, Any]:
    """Return the cores, memory, CPU model and load of this machine, to quote beside figures."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(pages / 2**30, 1),
        "cpu": cpu,
        "load_1m": round(os.getloadavg()[0], 2),
    }


# What a process's command line holds when it is a Spark driver JVM or a Kafka broker.
SPARK_MAIN = "org.apache.spark.deploy.SparkSubmit"
KAFKA_MAIN = "kafka.Kafka"

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _process_kind(comm: str, cmdline: str) -> str | None:
    if comm == "postgres":
        return "postgres"
    if SPARK_MAIN in cmdline:
        return "spark"
    if KAFKA_MAIN in cmdline:
        return "kafka"
    return None


def _stack_processes(proc: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """Yield (kind, /proc entry, stat fields after the name) of the machine's PostgreSQL, Spark
    driver and Kafka broker processes."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while being read
            continue
        comm, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        kind = _process_kind(comm, cmdline)
        if kind is not None:
            yield kind, entry, fields.split()


def cpu_seconds(proc: Path = Path("/proc")) -> dict[str, float]:
    """Return the CPU seconds (user + system) used so far by the machine's PostgreSQL, Spark
    driver and Kafka broker processes, each kind summed, and by this process ("driver")."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = {"postgres": 0.0, "spark": 0.0, "kafka": 0.0}
    for kind, _, fields in _stack_processes(proc):
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        # Exited children count in their parent once reaped: Postgres backends, one per
        # connection, come and go within a benchmark and land in the postmaster's share.
        totals[kind] += (utime + stime + cutime + cstime) / tick
    own = os.times()
    return {**totals, "driver": own.user + own.system}


def _pss_mb(entry: Path) -> float:
    """Return a process's proportional set size in MB (0 when it has ended)."""
    try:
        for line in (entry / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mb(entry: Path) -> float:
    """Return a process's resident set size in MB (0 when it has ended)."""
    try:
        return int((entry / "statm").read_text().split()[1]) * PAGE_BYTES / 2**20
    except (OSError, IndexError):  # IndexError: an exiting process's statm reads empty
        return 0.0


def memory_mb(proc: Path = Path("/proc")) -> dict[str, float]:
    """Return the memory of each kind of stack process and of this process ("driver"), in MB,
    and the machine's memory in use ("machine": total - available).

    Postgres: proportional set size, where a page shared by n processes counts 1/n in each, so
    the sum over its processes counts the shared buffers once. The one-process kinds: resident
    size, a counter, where Pss walks the page tables: for the Spark JVM of a backfill that took
    0.2-0.35 s per sample (0.08 CPU-s of this process), and its Pss and Rss differed by 0.2 %."""
    totals = {"postgres": 0.0, "spark": 0.0, "kafka": 0.0}
    for kind, entry, _ in _stack_processes(proc):
        totals[kind] += _pss_mb(entry) if kind == "postgres" else _rss_mb(entry)
    info = dict(line.split(":", 1) for line in (proc / "meminfo").read_text().splitlines())
    in_use_kb = int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])
    return {**totals, "driver": _rss_mb(proc / "self"), "machine": in_use_kb / 1024}


class PeakMemory:
    """Samples memory_mb() every `interval` seconds in a thread while its block runs; `peaks`
    holds the largest value of each kind seen, in MB."""

    def __init__(self, interval: float = 2.0, proc: Path = Path("/proc")) -> None:
        self.interval = interval
        self.proc = proc
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for kind, mb in memory_mb(self.proc).items():
                self.peaks[kind] = round(max(self.peaks.get(kind, 0.0), mb), 1)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_results(
    bench: str,
    figures: list[Figure],
    details: dict[str, Any],
    scale: list[dict[str, Any]] | None = None,
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """Write bench/results/<bench>.json (figures, machine, details, scale); return its path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "bench": bench,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": [asdict(f) | {"met": f.met()} for f in figures],
        "details": details,
    }
    if scale is not None:
        doc["scale"] = scale
    path = results_dir / f"{bench}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    for f in figures:
        target = "" if f.target is None else f"  (target {_number(f.target)} {f.unit})"
        print(f"  {f.name}: {_number(f.value)} {f.unit}{target}")
    return path


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def summary_markdown(docs: list[dict[str, Any]]) -> str:
    """Return summary.md: a table of every figure with target and size, then scale curves."""
    lines = [
        "# Benchmark summary",
        "",
        "Written by `make bench` (bench/summary.py) from the JSON files beside it.",
        "",
        "| benchmark | figure | value | target | met | rows | machine | when |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for doc in sorted(docs, key=lambda d: d["bench"]):
        m = doc["machine"]
        where = f"{m['cores']} cores, {m['memory_gb']:g} GB, load {m['load_1m']:g}"
        for f in doc["figures"]:
            target = "-" if f["target"] is None else f"{'≥' if f['better'] == 'higher' else '≤'} "
            if f["target"] is not None:
                target += f"{_number(f['target'])} {f['unit']}"
            met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
            rows = "-" if f["rows"] is None else f"{f['rows']:,}"
            lines.append(
                f"| {doc['bench']} | {f['name']} | {_number(f['value'])} {f['unit']} | {target} "
                f"| {met} | {rows} | {where} | {doc['when'][:16]} |"
            )
    curves = [(doc["bench"], doc["scale"]) for doc in docs if doc.get("scale")]
    for bench, points in curves:
        lines += [
            "",
            f"## Scale curve: {bench}",
            "",
            "| rows | seconds | rows/s | seconds per 100k rows |",
            "|---|---|---|---|",
        ]
        for p in sorted(points, key=lambda p: p["rows"]):
            lines.append(
                f"| {p['rows']:,} | {p['seconds']:.1f} | {p['rows'] / p['seconds']:,.0f} "
                f"| {p['seconds'] / p['rows'] * 100_000:.1f} |"
            )
    return "\n".join(lines) + "\n"
