"""The one client of the Confluent-compatible schema registry: register, look up and delete
schemas, and hold subjects to the compatibility rule of sf311.contract.compatibility."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import requests

from sf311.contract.compatibility import LEVEL, breaking_fields

_CONTENT = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
# Apicurio's refusal lists its findings as "... list of diff types: [a at /fields/0]".
_DIFFS = re.compile(r"list of diff types: \[(.*)\]")


class RegistryError(RuntimeError):
    """The schema registry refused or could not be reached; the message names it."""


class IncompatibleSchema(RegistryError):
    """The registry refused a schema version that breaks the subject's compatibility rule."""


class SchemaRegistry:
    """Registers schemas under subjects and caches writer schemas by id for the process."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._cache: dict[int, str | None] = {}

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return requests.request(
                method, f"{self.url}{path}", headers=_CONTENT, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as err:
            raise RegistryError(f"schema registry at {self.url} unreachable: {err}") from err

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Return the registry id of a schema under a subject, registering it if new; the
        subject is held to LEVEL first, so a version that breaks it is refused, naming the field."""
        self.set_compatibility(subject)
        body = {"schema": json.dumps(schema, separators=(",", ":")), "schemaType": "AVRO"}
        response = self._call("POST", f"/subjects/{subject}/versions", json=body)
        if response.status_code == 409:
            raise IncompatibleSchema(self._refusal(subject, schema, response.text))
        if response.status_code != 200:
            raise RegistryError(
                f"schema registry refused {subject}: HTTP {response.status_code} "
                f"{response.text[:300]}"
            )
        return int(response.json()["id"])

    def _refusal(self, subject: str, schema: dict[str, Any], answer: str) -> str:
        """Return the one line saying which fields keep `schema` out of the subject."""
        latest = self.latest(subject)
        found = breaking_fields(schema, latest[1]) if latest else []
        if not found:
            # The registry compared with another version than the latest: its own words.
            diffs = _DIFFS.search(answer)
            found = [diffs.group(1) if diffs else answer[:200]]
        against = f"version {latest[0]}" if latest else "its versions"
        return (
            f"schema registry refused {subject}: not {LEVEL}-compatible with {against}: "
            + "; ".join(found)
        )

    def latest(self, subject: str) -> tuple[int, dict[str, Any]] | None:
        """Return (version, schema) of a subject's newest version, None if it has none."""
        response = self._call("GET", f"/subjects/{subject}/versions/latest")
        if response.status_code == 404:
            return None
        if not response.ok:
            raise RegistryError(f"schema registry answered {response.status_code} for {subject}")
        body = response.json()
        return int(body["version"]), json.loads(body["schema"])

    def set_compatibility(self, subject: str, level: str = LEVEL) -> None:
        """Make the registry check every new version of a subject against `level`."""
        response = self._call("PUT", f"/config/{subject}", json={"compatibility": level})
        if not response.ok:
            raise RegistryError(
                f"schema registry refused compatibility {level} for {subject}: "
                f"HTTP {response.status_code} {response.text[:200]}"
            )

    def compatibility(self, subject: str) -> str | None:
        """Return the compatibility level set on a subject, None when it has its own none."""
        response = self._call("GET", f"/config/{subject}")
        if response.status_code == 404:
            return None
        if not response.ok:
            raise RegistryError(f"schema registry answered {response.status_code} for {subject}")
        return response.json().get("compatibilityLevel")

    def delete(self, subject: str) -> None:
        """Delete a subject and its versions for good; a subject already gone is no error."""
        # Confluent's API deletes softly first; the permanent delete needs that first step.
        for params in ({}, {"permanent": "true"}):
            response = self._call("DELETE", f"/subjects/{subject}", params=params)
            if response.status_code == 404:
                return
            if not response.ok:
                raise RegistryError(
                    f"schema registry cannot delete {subject}: HTTP {response.status_code} "
                    f"{response.text[:200]}"
                )

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

    def subject_schemas(self, subject: str) -> dict[int, str]:
        """Return {id: schema text} of every version registered under a subject (none when the
        subject does not exist), cached like the ids looked up one by one."""
        response = self._call("GET", f"/subjects/{subject}/versions")
        if response.status_code == 404:
            return {}
        if not response.ok:
            raise RegistryError(f"schema registry answered {response.status_code} for {subject}")
        found = {}
        for version in response.json():
            answer = self._call("GET", f"/subjects/{subject}/versions/{version}")
            if answer.status_code == 404:
                continue  # deleted since the listing
            if not answer.ok:
                raise RegistryError(
                    f"schema registry answered {answer.status_code} for {subject} version {version}"
                )
            body = answer.json()
            found[int(body["id"])] = body["schema"]
        self._cache.update(found)
        return found

    def known(self) -> dict[int, str]:
        """Return {id: schema text} of the ids looked up so far that the registry knows."""
        # list() copies in one step: the stream's two queries share this cache across threads.
        return {i: s for i, s in list(self._cache.items()) if s is not None}

    def writer_schemas(self, schema_ids: Iterable[int]) -> dict[int, str]:
        """Return {id: schema text} for the ids the registry knows; unknown ids are left out."""
        found = {i: self.writer_schema(i) for i in schema_ids}
        return {i: s for i, s in found.items() if s is not None}
