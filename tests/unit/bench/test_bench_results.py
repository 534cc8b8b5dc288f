"""Benchmark results files and the summary table `make bench` writes from them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bench.results import (
    KAFKA_MAIN,
    PAGE_BYTES,
    SPARK_MAIN,
    Figure,
    PeakMemory,
    cpu_seconds,
    memory_mb,
    summary_markdown,
    write_results,
)


def test_met_follows_the_direction_of_the_target() -> None:
    assert Figure("rate", 16_000, "rec/s", target=80_000).met() is False
    assert Figure("rate", 90_000, "rec/s", target=80_000).met() is True
    assert Figure("p99", 2.4, "ms", target=10, better="lower").met() is True
    assert Figure("p99", 12, "ms", target=10, better="lower").met() is False
    assert Figure("rows", 5, "rows").met() is None


def test_results_round_trip_into_the_summary(tmp_path: Path) -> None:
    figures = [
        Figure("end to end", 941, "rows/s", rows=100_000, target=15_000),
        Figure("freshness p95", 4.2, "s", rows=30_000, target=5, better="lower"),
    ]
    scale = [{"rows": 1_000_000, "seconds": 400.0}, {"rows": 100_000, "seconds": 50.0}]
    path = write_results("stream", figures, {"batches": 3}, scale=scale, results_dir=tmp_path)
    doc = json.loads(path.read_text())
    assert doc["machine"]["cores"] >= 1 and doc["details"] == {"batches": 3}
    text = summary_markdown([doc])
    rows = [line for line in text.splitlines() if line.startswith("| stream |")]
    assert rows[0].startswith("| stream | end to end | 941 rows/s | ≥ 15,000 rows/s | **no** |")
    assert "| 100,000 |" in rows[0]
    assert rows[1].startswith("| stream | freshness p95 | 4.2 s | ≤ 5 s | yes |")
    curve = text.split("## Scale curve: stream")[1].splitlines()
    # Sorted by size, with the cost per 100k rows that shows how cost grows.
    assert curve[4] == "| 100,000 | 50.0 | 2,000 | 50.0 |"
    assert curve[5] == "| 1,000,000 | 400.0 | 2,500 | 40.0 |"


def _fake_process(proc: Path, pid: int, comm: str, cmdline: str, ticks: tuple) -> None:
    """Write /proc/<pid>/stat and cmdline with utime, stime, cutime, cstime = ticks."""
    (proc / str(pid)).mkdir()
    fields = ["S", "1", *["0"] * 9, *map(str, ticks), "20", "0"]
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    (proc / str(pid) / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode())


def test_cpu_seconds_sums_each_kind_with_its_reaped_children(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    # The postmaster has reaped exited backends (cutime/cstime); one backend still runs.
    _fake_process(tmp_path, 10, "postgres", "/usr/lib/postgresql/15/bin/postgres -D x",
                  (1 * tick, 1 * tick, 5 * tick, 2 * tick))  # fmt: skip
    _fake_process(tmp_path, 11, "postgres", "postgres: sf311 sf311 127.0.0.1 COPY",
                  (3 * tick, 0, 0, 0))  # fmt: skip
    _fake_process(tmp_path, 20, "java", f"java -cp x {SPARK_MAIN} pyspark-shell",
                  (40 * tick, 4 * tick, 0, 0))  # fmt: skip
    _fake_process(tmp_path, 30, "java", f"java -cp y {KAFKA_MAIN} server.properties",
                  (6 * tick, 1 * tick, 0, 0))  # fmt: skip
    # A name with a space and a parenthesis must not shift the fields; it counts as nothing.
    _fake_process(tmp_path, 40, "tmux: server (1)", "tmux", (99 * tick, 0, 0, 0))
    (tmp_path / "self").mkdir()
    used = cpu_seconds(tmp_path)
    assert (used["postgres"], used["spark"], used["kafka"]) == (12.0, 44.0, 7.0)
    assert used["driver"] > 0


def _fake_memory(proc: Path, pid: int | str, pss_kb: int) -> None:
    """Write a process's Pss and, three times larger, its Rss (smaps_rollup and statm)."""
    (proc / str(pid) / "smaps_rollup").write_text(
        f"00400000-7fff [rollup]\nRss: {pss_kb * 3} kB\nPss: {pss_kb} kB\n"
    )
    resident = pss_kb * 3 * 1024 // PAGE_BYTES
    (proc / str(pid) / "statm").write_text(f"{resident * 2} {resident} 10 1 0 {resident} 0\n")


def test_memory_sums_postgres_proportionally_reads_the_rest_resident_and_the_machine(
    tmp_path: Path,
) -> None:
    # Two Postgres processes sharing buffers: their Pss, not their Rss, adds up once. The
    # one-process kinds read the resident-size counter (statm), never a page-table walk.
    _fake_process(tmp_path, 10, "postgres", "/usr/lib/postgresql/15/bin/postgres -D x", (0,) * 4)
    _fake_process(tmp_path, 11, "postgres", "postgres: sf311 sf311 127.0.0.1 COPY", (0,) * 4)
    _fake_process(tmp_path, 20, "java", f"java -cp x {SPARK_MAIN} pyspark-shell", (0,) * 4)
    _fake_process(tmp_path, 40, "bash", "bash", (0,) * 4)
    for pid, kb in ((10, 2048), (11, 1024), (20, 10240), (40, 99 * 1024)):
        _fake_memory(tmp_path, pid, kb)
    (tmp_path / "self").mkdir()
    _fake_memory(tmp_path, "self", 512)
    (tmp_path / "meminfo").write_text(
        "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n"
    )
    used = memory_mb(tmp_path)
    assert used == {"postgres": 3.0, "spark": 30.0, "kafka": 0.0, "driver": 1.5,
                    "machine": 4_000_000 / 1024}  # fmt: skip
    with PeakMemory(interval=0.01, proc=tmp_path) as memory:
        _fake_memory(tmp_path, 20, 30720)  # the driver grows, then shrinks again
        time.sleep(0.1)
        _fake_memory(tmp_path, 20, 1024)
        time.sleep(0.1)
    assert memory.peaks["spark"] == 90.0 and memory.peaks["postgres"] == 3.0
