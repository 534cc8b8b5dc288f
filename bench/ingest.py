"""Ingest throughput: raw-produce floor, file -> Kafka and SODA -> Kafka on generated cases.

    .venv/bin/python bench/ingest.py --rows 200000

Needs the stack (`make up`). Writes bench/results/ingest.json. Topics it creates are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from sf311.ingest.files import read_rows
from sf311.ingest.generate import write_cases
from sf311.ingest.normalize import DeadLetter, normalize
from sf311.ingest.produce import ensure_topics, producer_config
from sf311.ingest.run import case_encoder, ingest_file, ingest_socrata
from sf311.settings import Settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_seconds() -> float:
    """Return CPU seconds used so far by this process (all threads) and its ended children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
    """Run the three measurements and write bench/results/ingest.json.

    Besides records per wall-clock second, each figure is also given per CPU-second used
    (this process with librdkafka's threads, plus worker processes): on a shared machine
    the wall-clock rate mostly measures the neighbours.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--workers", type=int, help="file ingest worker processes (0 = inline)")
    args = parser.parse_args()

    base = load_settings()
    if args.workers is not None:
        base = base.model_copy(update={"ingest_workers": args.workers})
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

    figures: dict[str, float] = {}
    try:
        floor_settings = fresh("floor")
        encoder = case_encoder(floor_settings)
        sample = [
            encoder.encode(case)
            for _, row in zip(range(1000), read_rows(path, progress=False), strict=False)
            if not isinstance(case := normalize(row, "file"), DeadLetter)
        ]
        cpu = cpu_seconds()
        figures["raw_produce_floor_msg_s"] = raw_produce_floor(floor_settings, args.rows, sample)
        figures["raw_produce_floor_msg_per_cpu_s"] = args.rows / (cpu_seconds() - cpu)
        print(f"raw produce floor: {figures['raw_produce_floor_msg_s']:,.0f} msg/s")

        start, cpu = time.perf_counter(), cpu_seconds()
        counts = ingest_file(fresh("file"), path, progress=False)
        figures["file_to_kafka_rec_s"] = counts.read / (time.perf_counter() - start)
        figures["file_to_kafka_rec_per_cpu_s"] = counts.read / (cpu_seconds() - cpu)
        print(f"file -> kafka: {figures['file_to_kafka_rec_s']:,.0f} rec/s ({counts.summary()})")

        server = soda_server(path, args.port)
        try:
            soda = fresh(
                "soda",
                socrata_domain=f"127.0.0.1:{args.port}",
                socrata_scheme="http",
                socrata_timeout_seconds=300,
            )
            start, cpu = time.perf_counter(), cpu_seconds()
            counts = ingest_socrata(soda)
            rate = figures["soda_to_kafka_rec_s"] = counts.read / (time.perf_counter() - start)
            # The server's own CPU is left out: on Socrata it is someone else's machine.
            figures["soda_to_kafka_rec_per_client_cpu_s"] = counts.read / (cpu_seconds() - cpu)
            print(f"soda -> kafka: {rate:,.0f} rec/s ({counts.summary()})")
        finally:
            server.terminate()
            server.wait(30)
    finally:
        admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap_servers})
        existing = admin.list_topics(timeout=15).topics
        made = [t for t in topics if t in existing]
        for future in admin.delete_topics(made, operation_timeout=30).values() if made else []:
            future.result()

    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": "ingest",
        "rows": args.rows,
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "compression": base.kafka_compression,
        "file_workers": base.ingest_workers,
        "page_size": base.socrata_page_size,
        "figures": {k: round(v) for k, v in figures.items()},
        "targets": {"file_to_kafka_rec_s": 80_000, "soda_to_kafka_rec_s": 30_000},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
