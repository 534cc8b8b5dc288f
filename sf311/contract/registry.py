"""The one client of the Confluent-compatible schema registry: register and look up schemas."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import requests


class RegistryError(RuntimeError):
    """The schema registry refused or could not be reached; the message names it."""


class SchemaRegistry:
    """Registers schemas under subjects and caches writer schemas by id for the process."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._cache: dict[int, str | None] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Return the registry id of a schema under a subject, registering it if new."""
        body = {"schema": json.dumps(schema, separators=(",", ":")), "schemaType": "AVRO"}
        try:
            response = requests.post(
                f"{self.url}/subjects/{subject}/versions",
                json=body,
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
                timeout=self.timeout,
            )
        except requests.RequestException as err:
            raise RegistryError(f"schema registry at {self.url} unreachable: {err}") from err
        if response.status_code != 200:
            raise RegistryError(
                f"schema registry refused {subject}: HTTP {response.status_code} "
                f"{response.text[:300]}"
            )
        return int(response.json()["id"])

    def writer_schema(self, schema_id: int) -> str | None:
        """Return the schema text registered under an id, or None when the id is unknown."""
        if schema_id not in self._cache:
            try:
                resp = requests.get(f"{self.url}/schemas/ids/{schema_id}", timeout=self.timeout)
            except requests.RequestException as err:
                raise RegistryError(f"schema registry at {self.url} unreachable: {err}") from err
            if resp.status_code == 404:
                # An id is never reused, so "unknown" is stable and safe to cache.
                self._cache[schema_id] = None
            elif resp.ok:
                self._cache[schema_id] = resp.json()["schema"]
            else:
                raise RegistryError(
                    f"schema registry answered {resp.status_code} for id {schema_id}: "
                    f"{resp.text[:200]}"
                )
        return self._cache[schema_id]

    def known(self) -> dict[int, str]:
        """Return {id: schema text} of the ids looked up so far that the registry knows."""
        # list() copies in one step: the stream's two queries share this cache across threads.
        return {i: s for i, s in list(self._cache.items()) if s is not None}

    def writer_schemas(self, schema_ids: Iterable[int]) -> dict[int, str]:
        """Return {id: schema text} for the ids the registry knows; unknown ids are left out."""
        found = {i: self.writer_schema(i) for i in schema_ids}
        return {i: s for i, s in found.items() if s is not None}
