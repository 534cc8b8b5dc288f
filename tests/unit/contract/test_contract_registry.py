"""The schema registry client: registering under a subject held to FULL compatibility, refusals
that name the field, looking ids up, deleting subjects."""

from __future__ import annotations

import json

import pytest
import requests

from sf311.contract.registry import IncompatibleSchema, RegistryError, SchemaRegistry

SCHEMA = {"type": "record", "name": "T", "fields": [{"name": "a", "type": "long"}]}


class _Response:
    def __init__(self, status: int, body: dict | None = None) -> None:
        self.status_code = status
        self.ok = status < 400
        self._body = body or {}
        self.text = str(body)

    def json(self) -> dict:
        return self._body


def test_register_holds_the_subject_to_full_then_posts_the_compact_schema(monkeypatch) -> None:
    calls = []

    def fake_request(method, url, headers, timeout, **kwargs):
        calls.append((method, url, kwargs.get("json"), headers["Content-Type"], timeout))
        return _Response(200, {"id": 41} if method == "POST" else {"compatibility": "FULL"})

    monkeypatch.setattr(requests, "request", fake_request)
    registry = SchemaRegistry("http://registry/apis/ccompat/v7/", timeout=30)
    assert registry.register("cases-value", SCHEMA) == 41
    (put, post) = calls
    assert put[:3] == (
        "PUT",
        "http://registry/apis/ccompat/v7/config/cases-value",
        {"compatibility": "FULL"},
    )
    method, url, body, content_type, timeout = post
    assert (method, url) == (
        "POST",
        "http://registry/apis/ccompat/v7/subjects/cases-value/versions",
    )
    assert body == {"schema": json.dumps(SCHEMA, separators=(",", ":")), "schemaType": "AVRO"}
    assert content_type == "application/vnd.schemaregistry.v1+json" and timeout == 30


def _registry_answering(monkeypatch, post: _Response, latest: _Response) -> None:
    def fake_request(method, url, **kwargs):
        if method == "POST":
            return post
        return latest if url.endswith("/versions/latest") else _Response(200)

    monkeypatch.setattr(requests, "request", fake_request)


def test_a_refused_version_names_the_breaking_field(monkeypatch) -> None:
    retyped = {**SCHEMA, "fields": [{"name": "a", "type": "string"}]}
    answer = _Response(409, {"message": "Incompatible artifact ... list of diff types: [x]"})
    latest = _Response(200, {"version": 3, "schema": json.dumps(SCHEMA)})
    _registry_answering(monkeypatch, answer, latest)
    with pytest.raises(IncompatibleSchema) as refused:
        SchemaRegistry("http://registry").register("cases-value", retyped)
    assert str(refused.value) == (
        "schema registry refused cases-value: not FULL-compatible with version 3: "
        "field 'a' changed type from long to string"
    )


def test_a_refusal_the_local_check_cannot_explain_quotes_the_registry(monkeypatch) -> None:
    answer = _Response(409, {"message": "Incompatible ... list of diff types: [a at /fields/0]"})
    _registry_answering(monkeypatch, answer, _Response(404))
    with pytest.raises(IncompatibleSchema, match=r"with its versions: a at /fields/0"):
        SchemaRegistry("http://registry").register("cases-value", SCHEMA)


def test_other_refusals_and_unreachable_raise_registry_error(monkeypatch) -> None:
    _registry_answering(monkeypatch, _Response(500, {"message": "no"}), _Response(404))
    with pytest.raises(RegistryError, match="refused cases-value: HTTP 500"):
        SchemaRegistry("http://registry").register("cases-value", SCHEMA)

    def refused(*args, **kwargs):
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(requests, "request", refused)
    with pytest.raises(RegistryError, match="http://registry unreachable"):
        SchemaRegistry("http://registry/").register("cases-value", SCHEMA)


def test_delete_deletes_softly_then_for_good_and_ignores_a_missing_subject(monkeypatch) -> None:
    calls = []

    def fake_request(method, url, params=None, **kwargs):
        calls.append((method, url, params))
        return _Response(200 if len(calls) < 3 else 404)

    monkeypatch.setattr(requests, "request", fake_request)
    registry = SchemaRegistry("http://registry")
    registry.delete("t-value")
    assert calls == [
        ("DELETE", "http://registry/subjects/t-value", {}),
        ("DELETE", "http://registry/subjects/t-value", {"permanent": "true"}),
    ]
    registry.delete("t-value")  # gone already: 404, no error
    assert len(calls) == 3


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


def test_compatibility_reads_the_subjects_level_and_none_when_unset(monkeypatch) -> None:
    answers = {
        "http://registry/config/set-value": _Response(200, {"compatibilityLevel": "FULL"}),
        "http://registry/config/unset-value": _Response(404, {"error_code": 40401}),
    }
    monkeypatch.setattr(requests, "request", lambda method, url, **kwargs: answers[url])
    registry = SchemaRegistry("http://registry")
    assert registry.compatibility("set-value") == "FULL"
    assert registry.compatibility("unset-value") is None
