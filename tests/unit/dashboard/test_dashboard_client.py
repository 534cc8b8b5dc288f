"""The prediction API client: payloads, tolerant parsing, and each failure mode."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest

from sf311.dashboard import client


class _Stub(BaseHTTPRequestHandler):
    """Answers POSTs with the status and body queued in `server.answers` for the path."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, body))
        status, answer = self.server.answers[self.path]
        data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    server.answers, server.seen = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: HTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def test_payload_keeps_model_fields_and_serializes_values():
    case = {
        "service_request_id": 7,
        "requested_datetime": pd.Timestamp("2024-03-10 12:00", tz="UTC"),
        "service_name": "Graffiti",
        "supervisor_district": pd.Series([3]).iloc[0],
        "lat": float("nan"),
        "long": -122.4,
        "status_description": "Open",
    }
    assert client.case_payload(case) == {
        "requested_datetime": "2024-03-10T12:00:00+00:00",
        "service_name": "Graffiti",
        "supervisor_district": 3,
        "long": -122.4,
    }


@pytest.mark.parametrize(
    "answer",
    [
        {"predicted_hours": 5, "lower_hours": 1, "upper_hours": 20, "model_version": "3"},
        {"hours": 5.0, "interval": [1, 20], "version": 3},
        {"prediction": 5.0, "interval": {"lower": 1, "upper": 20}, "model_version": "3"},
    ],
)
def test_parse_accepts_the_usual_answer_shapes(answer):
    assert client.parse_prediction(answer) == client.Prediction(5.0, 1.0, 20.0, "3")


def test_parse_without_hours_is_an_api_error():
    with pytest.raises(client.ApiError, match="without predicted hours"):
        client.parse_prediction({"detail": "model missing"})


def test_predict_posts_one_case(stub):
    stub.answers["/predict"] = (200, {"predicted_hours": 12.5, "model_version": "7"})
    when = datetime(2024, 3, 10, 20, tzinfo=UTC)
    got = client.predict(_url(stub), {"service_name": "Graffiti", "requested_datetime": when})
    assert got == client.Prediction(12.5, None, None, "7")
    assert stub.seen == [
        ("/predict", {"service_name": "Graffiti", "requested_datetime": when.isoformat()})
    ]


def test_predict_batch_keeps_the_order_and_checks_the_length(stub):
    stub.answers["/predict/batch"] = (
        200,
        {"predictions": [{"predicted_hours": 1}, {"predicted_hours": 2}]},
    )
    got = client.predict_batch(_url(stub), [{"service_name": "a"}, {"service_name": "b"}])
    assert [p.hours for p in got] == [1.0, 2.0]
    assert stub.seen[0][1] == {"cases": [{"service_name": "a"}, {"service_name": "b"}]}
    with pytest.raises(client.ApiError, match="one prediction per case"):
        client.predict_batch(_url(stub), [{"service_name": "a"}])
    assert client.predict_batch(_url(stub), []) == []


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, {"detail": "no model loaded"}, client.ApiUnavailable),
        (422, {"detail": "lat: not a number"}, client.ApiError),
        (200, "not json", client.ApiError),
    ],
)
def test_failures_map_to_unavailable_or_error(stub, status, body, error):
    stub.answers["/predict"] = (status, body)
    with pytest.raises(error):
        client.predict(_url(stub), {"service_name": "Graffiti"})


def test_a_closed_port_is_unavailable():
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    url = _url(server)
    server.server_close()
    with pytest.raises(client.ApiUnavailable, match="not reachable"):
        client.predict(url, {"service_name": "Graffiti"}, timeout=2)
