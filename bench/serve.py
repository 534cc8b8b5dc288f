"""Prediction API latency and throughput against a local uvicorn, and MLflow's Spark pyfunc.

Fits the production forest on the real 10k sample, exports the JVM-free scorer, serves it with
uvicorn (one worker, a subprocess) and measures: one-row latency p50/p99 (sequential), throughput
at concurrency 16, a 1,000-row batch; then MLflow's Spark pyfunc on the same requests.
Run: .venv/bin/python -m bench.serve [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results import Figure, write_results
from sf311.contract.city import LOCAL_ZONE
from sf311.model.columns import FEATURES, INPUT_COLUMNS
from sf311.model.features import labelled, record_features
from sf311.settings import PROJECT_ROOT, load_settings
from tests.support import silver_frames

CSV = PROJECT_ROOT.parent / "shared" / "data" / "sf311" / "cases_10k_2008_2019.csv"
TEST_START = datetime(2018, 7, 1, tzinfo=LOCAL_ZONE)
# The request carries requested_datetime separately, in the API's own format.
REQUEST_FIELDS = [c for c in INPUT_COLUMNS if c != "requested_datetime"]


def run_server(scorer_dir: Path, port: int) -> None:
    """Serve the exported scorer on 127.0.0.1:port (the bench's subprocess)."""
    import uvicorn

    from sf311.model.champion import LoadedModel, ModelService
    from sf311.model.online import OnlineRule, recalibrate
    from sf311.model.scorer import Scorer
    from sf311.serving.api import create_app

    scorer = Scorer.load(scorer_dir)
    # Requests are answered under an online calibration, as served (none is recomputed here).
    recal = recalibrate(
        scorer, silver_frames.silver_cases_from_api_csv(CSV), TEST_START, OnlineRule()
    )
    service = ModelService(LoadedModel(scorer, "bench", recalibration=recal))
    app = create_app(load_settings(), service)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def request_bytes(path: str, payload: object) -> bytes:
    """Return one keep-alive HTTP/1.1 POST with a JSON body."""
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader, writer, request: bytes) -> bytes:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode() + body.decode())
    return body


async def load(port: int, requests: list[bytes], concurrency: int) -> tuple[np.ndarray, float]:
    """Return per-request latencies (s) and wall time of sending `requests` over N connections."""
    latencies: list[float] = []
    queue = list(reversed(requests))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            req = queue.pop()
            t = time.perf_counter()
            await _exchange(reader, writer, req)
            latencies.append(time.perf_counter() - t)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return np.array(latencies), time.perf_counter() - started


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    """Return once something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


def free_port() -> int:
    """Return a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ms(values: np.ndarray, q: float) -> float:
    """Return the q-quantile of latencies in seconds, in milliseconds."""
    return round(float(np.quantile(values, q)) * 1000, 3)


def main() -> int:
    """Run the benchmark, print figures and write them with write_results("serve")."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--pyfunc-requests", type=int, default=30)
    parser.add_argument("--serve-scorer", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_scorer:
        run_server(args.serve_scorer, args.port)
        return 0

    import mlflow

    from sf311.model.export import export_pipeline
    from sf311.model.train import TrainConfig, fit_pipeline, max_categories, with_recency_weight
    from sf311.spark import build_spark

    settings = load_settings()
    spark = build_spark(settings, "sf311-bench-serve", {"spark.sql.shuffle.partitions": "2"})
    cases = silver_frames.silver_cases_from_api_csv(CSV)
    data = labelled(silver_frames.to_spark(spark, cases))
    train = with_recency_weight(data.where(data.requested_datetime < TEST_START), TEST_START, 365)
    cfg = TrainConfig(test_start=TEST_START)
    model = fit_pipeline(cfg, train, max(32, max_categories(train, cfg.categorical) + 1))
    held = cases[pd.to_datetime(cases["requested_datetime"], utc=True) >= TEST_START]
    records = held.head(1000).to_dict("records")
    payloads = [
        {
            "requested_datetime": r["requested_datetime"].isoformat(),
            **{k: (None if pd.isna(r[k]) else r[k]) for k in REQUEST_FIELDS},
        }
        for r in records
    ]
    for p in payloads:
        if p["supervisor_district"] is not None:
            p["supervisor_district"] = int(p["supervisor_district"])
    calibration = {
        "group_column": "service_name",
        "coverage": 0.8,
        "global": [-1.0, 0.0, 1.0],
        "groups": {},
    }
    results: dict[str, object] = {"requests": args.requests, "concurrency": 16}
    with tempfile.TemporaryDirectory() as tmp:
        scorer_dir = export_pipeline(model, calibration, Path(tmp) / "scorer")
        spark_dir = Path(tmp) / "spark-model"
        mlflow.spark.save_model(model, str(spark_dir), pip_requirements=["pyspark==4.2.0"])
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.serve",
                "--serve-scorer",
                str(scorer_dir),
                "--port",
                str(port),
            ],
            cwd=PROJECT_ROOT,
        )
        try:
            wait_for_port(port)
            one = [request_bytes("/predict", payloads[i % 1000]) for i in range(args.requests)]
            asyncio.run(load(port, one[:200], 4))  # warm-up
            seq, _ = asyncio.run(load(port, one[: min(2000, args.requests)], 1))
            conc, wall = asyncio.run(load(port, one, 16))
            batch_req = [request_bytes("/predict/batch", {"cases": payloads})] * 10
            batch, _ = asyncio.run(load(port, batch_req, 1))
        finally:
            server.terminate()
            server.wait(timeout=30)
        results["api"] = {
            "one_row_p50_ms": ms(seq, 0.5),
            "one_row_p99_ms": ms(seq, 0.99),
            "concurrent16_p50_ms": ms(conc, 0.5),
            "concurrent16_p99_ms": ms(conc, 0.99),
            "throughput_rps": round(len(conc) / wall, 1),
            "batch_1000_p50_ms": ms(batch, 0.5),
        }
        pyfunc = mlflow.pyfunc.load_model(str(spark_dir))
        frame = pd.DataFrame([record_features(r) for r in records])[list(FEATURES)]
        pyfunc.predict(frame.head(1))
        singles = []
        for i in range(args.pyfunc_requests):
            t = time.perf_counter()
            pyfunc.predict(frame.iloc[[i]])
            singles.append(time.perf_counter() - t)
        batches = []
        for _ in range(3):
            t = time.perf_counter()
            pyfunc.predict(frame)
            batches.append(time.perf_counter() - t)
    singles_a, batches_a = np.array(singles), np.array(batches)
    api = results["api"]
    results["mlflow_spark_pyfunc"] = {
        "one_row_p50_ms": ms(singles_a, 0.5),
        "one_row_p99_ms": ms(singles_a, 0.99),
        "batch_1000_p50_ms": ms(batches_a, 0.5),
    }
    results["ratio_pyfunc_over_api"] = {
        "one_row_p50": round(ms(singles_a, 0.5) / api["one_row_p50_ms"], 1),
        "batch_1000_p50": round(ms(batches_a, 0.5) / api["batch_1000_p50_ms"], 1),
    }
    pyfunc_fig = results["mlflow_spark_pyfunc"]
    n = args.requests
    figures = [
        Figure("api_one_row_p50", api["one_row_p50_ms"], "ms", n, 2.0, "lower"),
        Figure("api_one_row_p99", api["one_row_p99_ms"], "ms", n, 10.0, "lower"),
        Figure("api_throughput_concurrency16", api["throughput_rps"], "req/s", n, 1000.0),
        Figure("api_concurrency16_p99", api["concurrent16_p99_ms"], "ms", n, better="lower"),
        Figure("api_batch_1000_p50", api["batch_1000_p50_ms"], "ms", 1000, better="lower"),
        Figure("pyfunc_one_row_p50", pyfunc_fig["one_row_p50_ms"], "ms", args.pyfunc_requests),
        Figure("pyfunc_batch_1000_p50", pyfunc_fig["batch_1000_p50_ms"], "ms", 1000),
        Figure("pyfunc_over_api_one_row_p50", results["ratio_pyfunc_over_api"]["one_row_p50"], "x"),
    ]
    print(json.dumps(results, indent=1))
    write_results("serve", figures, results)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
