"""The schema registry client: registering under a subject, looking ids up, one error type."""

from __future__ import annotations

import json

import pytest
import requests

from sf311.contract.registry import RegistryError, SchemaRegistry

SCHEMA = {"type": "record", "name": "T", "fields": [{"name": "a", "type": "long"}]}


class _Response:
    def __init__(self, status: int, body: dict | None = None) -> None:
        self.status_code = status
        self.ok = status < 400
        self._body = body or {}
        self.text = str(body)

    def json(self) -> dict:
        return self._body


def test_register_posts_the_compact_schema_and_returns_its_id(monkeypatch) -> None:
    calls = []

    def fake_post(url, json, headers, timeout):
        calls.append((url, json, headers["Content-Type"], timeout))
        return _Response(200, {"id": 41})

    monkeypatch.setattr(requests, "post", fake_post)
    registry = SchemaRegistry("http://registry/apis/ccompat/v7/", timeout=30)
    assert registry.register("cases-value", SCHEMA) == 41
    ((url, body, content_type, timeout),) = calls
    assert url == "http://registry/apis/ccompat/v7/subjects/cases-value/versions"
    assert body == {"schema": json.dumps(SCHEMA, separators=(",", ":")), "schemaType": "AVRO"}
    assert content_type == "application/vnd.schemaregistry.v1+json" and timeout == 30


def test_register_refused_or_unreachable_raises_registry_error(monkeypatch) -> None:
    monkeypatch.setattr(requests, "post", lambda *a, **k: _Response(409, {"message": "no"}))
    with pytest.raises(RegistryError, match="refused cases-value: HTTP 409"):
        SchemaRegistry("http://registry").register("cases-value", SCHEMA)

    def refused(*args, **kwargs):
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(requests, "post", refused)
    with pytest.raises(RegistryError, match="http://registry unreachable"):
        SchemaRegistry("http://registry/").register("cases-value", SCHEMA)


def test_registry_caches_known_and_unknown_ids(monkeypatch) -> None:
    calls = []

    def fake_get(url, timeout):
        calls.append(url)
        return _Response(200, {"schema": '"long"'}) if url.endswith("/1") else _Response(404)

    monkeypatch.setattr(requests, "get", fake_get)
    registry = SchemaRegistry("http://registry/apis/ccompat/v7/")
    assert registry.known() == {}
    assert registry.writer_schemas([1, 2]) == {1: '"long"'}
    assert registry.known() == {1: '"long"'}
    assert registry.writer_schema(2) is None
    assert registry.writer_schemas([1, 2]) == {1: '"long"'}
    assert calls == [
        "http://registry/apis/ccompat/v7/schemas/ids/1",
        "http://registry/apis/ccompat/v7/schemas/ids/2",
    ]


def test_lookup_errors_raise_instead_of_reading_as_unknown(monkeypatch) -> None:
    monkeypatch.setattr(requests, "get", lambda url, timeout: _Response(503))
    with pytest.raises(RegistryError, match="answered 503 for id 1"):
        SchemaRegistry("http://registry").writer_schema(1)

    def refused(url, timeout):
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(requests, "get", refused)
    with pytest.raises(RegistryError, match="unreachable"):
        SchemaRegistry("http://registry").writer_schema(1)
