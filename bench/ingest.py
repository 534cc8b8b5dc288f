"""Ingest throughput: per-stage CPU, raw-produce floor, file -> Kafka and SODA -> Kafka.

    .venv/bin/python -m bench.ingest                 # 200,000 generated rows, a few minutes
    .venv/bin/python -m bench.ingest --rows 1000000  # the issue's 1 M run

Needs the stack (`make up`). Writes bench/results/ingest.json through bench.results.
Topics it creates are deleted. On a shared machine compare each figure with the raw-produce
floor of the same run (the `*_vs_floor` ratios), not across runs.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pyarrow.json as pj
import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bench.results import Figure, write_results
from sf311.contract.registry import SchemaRegistry
from sf311.ingest.files import read_rows
from sf311.ingest.generate import write_cases
from sf311.ingest.normalize import DeadLetter, normalize
from sf311.ingest.produce import ensure_topics, producer_config
from sf311.ingest.records import CaseEncoder
from sf311.ingest.run import case_encoder, ingest_file, ingest_socrata, rare_collections
from sf311.ingest.wire import BlockEncoder
from sf311.settings import Settings, load_settings

STAGE_ROWS = 50_000
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """Return CPU seconds used so far by this process (all threads) and its ended children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def process_cpu(pid: int) -> float:
    """Return CPU seconds used so far by a running process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def stage_costs(path: Path, encoder: CaseEncoder, rows: int) -> dict[str, float]:
    """Return CPU microseconds per record of each ingest stage, best of 3 interleaved rounds.

    Rounds run every stage in turn, so load from neighbours drifts over all stages alike.
    """
    with path.open("rb") as fh:
        lines = list(islice(fh, rows))
    raw = [orjson.loads(line) for line in lines]
    cases = [c for c in (normalize(r, "file") for r in raw) if not isinstance(c, DeadLetter)]
    blocks = BlockEncoder(encoder, "file")
    blocks.rows(raw)  # the per-hour offsets of the clock, as after the first block of a run
    data = b"".join(lines)
    stages = {
        "parse_json_us": lambda: [json.loads(line) for line in lines],
        "parse_orjson_us": lambda: [orjson.loads(line) for line in lines],
        "parse_arrow_json_us": lambda: pj.read_json(io.BytesIO(data)),
        "normalize_us": lambda: [normalize(r, "file") for r in raw],
        "encode_us": lambda: [encoder.encode(c) for c in cases],
        "key_us": lambda: [str(c["service_request_id"]).encode() for c in cases],
        "columnar_from_dicts_us": lambda: blocks.rows(raw),
        "columnar_from_json_lines_us": lambda: blocks.json_lines(lines, raw.__getitem__),
    }
    best = dict.fromkeys(stages, float("inf"))
    # Under the same cycle-collector setting as the ingest loops.
    with rare_collections():
        for _ in range(3):
            for name, work in stages.items():
                gc.collect()
                start = time.process_time()
                work()
                best[name] = min(best[name], time.process_time() - start)
    return {name: round(seconds / len(lines) * 1e6, 2) for name, seconds in best.items()}


def raw_produce_floor(settings: Settings, rows: int, sample: list[bytes]) -> float:
    """Return msg/s of producing pre-encoded payloads with the ingest producer's config."""
    ensure_topics(settings, [settings.kafka_topic])
    producer = Producer(producer_config(settings))
    start = time.perf_counter()
    for i in range(rows):
        while True:
            try:
                producer.produce(settings.kafka_topic, sample[i % len(sample)], str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    return rows / (time.perf_counter() - start)


def soda_server(path: Path, port: int) -> subprocess.Popen:
    """Start `sf311 soda-server` in its own process and wait until its keyset order is built."""
    sf311 = Path(sys.executable).with_name("sf311")
    proc = subprocess.Popen([str(sf311), "soda-server", str(path), "--port", str(port)])
    url = f"http://127.0.0.1:{port}/resource/vw6y-z8j6.json"
    warm = {"$order": "updated_datetime ASC, service_request_id ASC", "$limit": "1"}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            requests.get(url, params=warm, timeout=600).raise_for_status()
            return proc
        except requests.ConnectionError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("soda-server did not start")


def main() -> int:
    """Run the measurements and write bench/results/ingest.json.

    Besides records per wall-clock second, each run is also given per CPU-second used by the
    client (this process with its encoding and librdkafka's threads) and as a ratio to
    the raw-produce floor of the same run: on a shared machine those move less than rates.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--skip-soda", action="store_true")
    args = parser.parse_args()

    base = load_settings()
    data_dir = base.state_dir / "bench"
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"cases_{args.rows}_{args.seed}.jsonl"
    if not path.exists():
        print(f"generating {args.rows} rows -> {path}")
        write_cases(path, args.rows, args.seed)

    tag = uuid.uuid4().hex[:8]
    topics: list[str] = []

    def fresh(name: str, **extra: object) -> Settings:
        topic = f"bench.ingest.{tag}.{name}"
        topics.extend([topic, topic + ".dlq"])
        return base.model_copy(
            update={"kafka_topic": topic, "kafka_dlq_topic": topic + ".dlq", **extra}
        )

    rows = args.rows
    runs: dict[str, dict[str, Any]] = {}

    def record(name: str, read: int, seconds: float, cpu: float, **more: Any) -> None:
        runs[name] = {
            "rec_s": round(read / seconds),
            "rec_per_client_cpu_s": round(read / cpu),
            "seconds": round(seconds, 2),
            "load_1m": round(os.getloadavg()[0], 2),
            **more,
        }
        print(f"{name}: {read / seconds:,.0f} rec/s  {runs[name]}")

    try:
        floor_settings = fresh("floor")
        encoder = case_encoder(floor_settings)
        stages = stage_costs(path, encoder, min(rows, STAGE_ROWS))
        print("stage CPU us/record:", stages)
        sample = [
            encoder.encode(case)
            for _, row in zip(range(1000), read_rows(path, progress=False), strict=False)
            if not isinstance(case := normalize(row, "file"), DeadLetter)
        ]
        floor = {}
        for compression in ("lz4", "none"):
            settings = fresh(f"floor-{compression}", kafka_compression=compression)
            start, cpu = time.perf_counter(), cpu_seconds()
            floor[compression] = raw_produce_floor(settings, rows, sample)
            record(f"raw_produce_{compression}", rows, rows / floor[compression],
                   cpu_seconds() - cpu)  # fmt: skip

        settings = fresh("file")
        start, cpu = time.perf_counter(), cpu_seconds()
        counts = ingest_file(settings, path, progress=False)
        record("file", counts.read, time.perf_counter() - start, cpu_seconds() - cpu,
               counts=counts.as_dict())  # fmt: skip

        if not args.skip_soda:
            server = soda_server(path, args.port)
            try:
                soda = fresh(
                    "soda",
                    socrata_domain=f"127.0.0.1:{args.port}",
                    socrata_scheme="http",
                    socrata_timeout_seconds=300,
                )
                server_cpu = process_cpu(server.pid)
                start, cpu = time.perf_counter(), cpu_seconds()
                counts = ingest_socrata(soda)
                seconds = time.perf_counter() - start
                # The server shares the 2 cores; on Socrata it is someone else's machine.
                served = process_cpu(server.pid) - server_cpu
                record("soda", counts.read, seconds, cpu_seconds() - cpu,
                       server_cpu_s=round(served, 2), server_cpu_share=round(served / seconds, 2),
                       page_size=soda.socrata_page_size, counts=counts.as_dict())  # fmt: skip
            finally:
                server.terminate()
                server.wait(30)
    finally:
        admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap_servers})
        existing = admin.list_topics(timeout=15).topics
        made = [t for t in topics if t in existing]
        for future in admin.delete_topics(made, operation_timeout=30).values() if made else []:
            future.result()
        registry = SchemaRegistry(base.schema_registry_url)
        for topic in topics:
            registry.delete(f"{topic}-value")

    lz4 = runs["raw_produce_lz4"]["rec_s"]
    for run in runs.values():
        run["vs_floor_lz4"] = round(run["rec_s"] / lz4, 3)
    figures = [
        Figure("raw_produce_floor", lz4, "msg/s", rows=rows),
        Figure("file_to_kafka", runs["file"]["rec_s"], "rec/s", rows=rows, target=80_000),
    ]
    if "soda" in runs:
        figures.append(Figure("soda_to_kafka", runs["soda"]["rec_s"], "rec/s", rows=rows,
                              target=30_000))  # fmt: skip
    details = {
        "rows": rows,
        "compression": base.kafka_compression,
        "linger_ms": base.kafka_linger_ms,
        "stage_cpu_us_per_record": stages,
        "runs": runs,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    write_results("ingest", figures, details)
    print(json.dumps(details, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
