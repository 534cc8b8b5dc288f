"""Where ingest runs read raw rows: the Source interface, the Socrata and file sources by name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from psycopg.conninfo import make_conninfo

from sf311.errors import InputError
from sf311.ingest.extract import (
    SELECT,
    PageBlock,
    get_page,
    iter_pages,
    socrata_client,
    start_position,
    to_floating,
    without_system_fields,
)
from sf311.ingest.files import (
    RawBatch,
    check_file,
    csv_header,
    file_kind,
    read_batches,
    reading_error,
)
from sf311.ingest.normalize import KNOWN_COLUMNS
from sf311.ingest.watermark import RunMark, Watermark, WatermarkStore
from sf311.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Block:
    """Raw rows for BlockEncoder.block(), how many were read, and the mark to report after them."""

    # A new source yields RawBatches: 'rows' of dicts, JSON 'lines' or CSV 'cells'.
    rows: RawBatch | PageBlock
    read: int
    # Reported to on_acked once every record up to this block is acknowledged; None: no checkpoint.
    mark: Any = None


@runtime_checkable
class Source(Protocol):
    """One run's rows: entered around the run, read in blocks of at most `size` rows."""

    # The `origin` of its cases and dead letters.
    origin: str

    @property
    def on_acked(self) -> Callable[[Any], None] | None:
        """Return what takes the newest mark the broker fully acknowledged; None: no marks."""
        ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...

    def iter_blocks(self, size: int) -> Iterator[Block]:
        """Yield the source's rows in Blocks of at most `size` rows."""
        ...


def watermark_source(settings: Settings) -> str:
    """Return the watermark key of the Socrata source: dataset and the topic it feeds."""
    return f"socrata:{settings.socrata_domain}/{settings.socrata_dataset}->{settings.kafka_topic}"


class SocrataSource:
    """Socrata rows changed after the watermark (or `since`) and before `until`, in keyset order."""

    origin = "socrata"
    # Open between __enter__ and __exit__.
    _store: WatermarkStore

    def __init__(
        self,
        settings: Settings,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int | None = None,
    ) -> None:
        self.settings = settings
        self.since = since
        self.until = until
        self.page_size = page_size
        self.key = watermark_source(settings)
        self._start: Watermark | None = None
        self._changed_since: datetime | None = None

    @classmethod
    def from_args(
        cls, settings: Settings, path: Path | None, since: datetime | None, until: datetime | None
    ) -> SocrataSource:
        """Return the source of `sf311 ingest --source socrata [--since] [--until]`."""
        if path is not None:
            raise InputError("--source socrata takes no PATH")
        return cls(settings, since=since, until=until)

    def __enter__(self) -> SocrataSource:
        dsn = self.settings.postgres_dsn.get_secret_value()
        timeout = self.settings.connect_timeout_seconds
        self._store = WatermarkStore(make_conninfo(dsn, connect_timeout=timeout))
        overlap = timedelta(seconds=self.settings.socrata_overlap_seconds)
        try:
            self._start = start_position(
                self._store.get(self.key), to_floating(self.since) if self.since else None, overlap
            )
            system = self._store.system_updated_at(self.key)
            self._changed_since = system - overlap if system is not None else None
        except BaseException:
            self._store.close()
            raise
        until = to_floating(self.until) if self.until else None
        log.info("socrata ingest %s from %s until %s, changed since %s",
                 self.key, self._start, until, self._changed_since)  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        self._store.close()

    def on_acked(self, mark: RunMark) -> None:
        """Advance the stored watermark to a page the broker fully acknowledged."""
        self._store.advance(self.key, mark.position, mark.system_updated_at)

    def iter_blocks(self, size: int) -> Iterator[Block]:
        """Yield each page in Blocks of `size` rows; its last block carries its watermark, the
        run's last block also the newest :updated_at of the run."""
        until = to_floating(self.until) if self.until else None
        position, newest = self._start, None
        with socrata_client(self.settings) as client:
            pages = iter_pages(
                client, self.settings, self._start, until, self.page_size, self._changed_since
            )
            for page in pages:
                position = page.last or position
                if page.updated_at is not None:
                    newest = max(newest or page.updated_at, page.updated_at)
                # Only a whole run's :updated_at counts: its rows come in no order of it.
                final = len(page.rows) < (self.page_size or self.settings.socrata_page_size)
                n = len(page.rows)
                ends = list(range(size, n, size)) + [n]
                for begin, end in zip([0, *ends], ends, strict=False):
                    mark = None
                    if end == n and position is not None:
                        mark = RunMark(position, newest if final else None)
                    yield Block(PageBlock(page.rows, begin, end), end - begin, mark)


class IdsSource:
    """The Socrata rows of given service_request_ids, as they are now (a reconcile's re-extract)."""

    origin = "socrata"
    on_acked = None
    # Ids per request: each is a few characters of the URL's $where.
    CHUNK = 200

    def __init__(self, settings: Settings, ids: Iterable[int]) -> None:
        self.settings = settings
        self.ids = sorted(set(ids))

    def __enter__(self) -> IdsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def iter_blocks(self, size: int) -> Iterator[Block]:
        """Yield the rows of the ids, CHUNK ids per request, in Blocks of at most `size` rows."""
        step = min(size, self.CHUNK)
        with socrata_client(self.settings) as client:
            for at in range(0, len(self.ids), step):
                chunk = self.ids[at : at + step]
                params = {
                    "select": SELECT,
                    "where": f"service_request_id IN ({', '.join(map(str, chunk))})",
                    "order": "service_request_id",
                    "limit": len(chunk),
                }
                rows, _ = without_system_fields(get_page(client, self.settings, params))
                yield Block(PageBlock(rows, 0, len(rows)), len(rows))


class FileSource:
    """The rows of a CSV, JSON or JSON-lines file (optionally .gz), in file order."""

    origin = "file"
    on_acked = None

    def __init__(self, path: Path, progress: bool | None = None) -> None:
        self.path = Path(path)
        self.progress = progress

    @classmethod
    def from_args(
        cls, settings: Settings, path: Path | None, since: datetime | None, until: datetime | None
    ) -> FileSource:
        """Return the source of `sf311 ingest --source file PATH`."""
        if path is None or since or until:
            raise InputError("--source file takes a PATH and no --since/--until")
        return cls(path)

    def __enter__(self) -> FileSource:
        # Before any service is reached: a file that cannot be ingested fails in a moment.
        check_file(self.path)
        if file_kind(self.path) == "csv":
            try:
                header = csv_header(self.path)
            except Exception as err:
                if (error := reading_error(self.path, err)) is None:
                    raise
                raise error from err
            if not KNOWN_COLUMNS.intersection(header):
                raise InputError(
                    f"{self.path}: line 1: no column of the header ({', '.join(header)[:200]}) "
                    "is a column of SF 311 cases such as CaseID or service_request_id: "
                    "give a DataSF export or an API-named CSV"
                )
        return self

    def __exit__(self, *exc: object) -> None:
        # Reading happens in the run's blocks and encode threads: the error surfaces here.
        raised = exc[1]
        if isinstance(raised, BaseException) and (error := reading_error(self.path, raised)):
            raise error from raised

    def iter_blocks(self, size: int) -> Iterator[Block]:
        """Yield the file's rows in Blocks of `size`, read but not yet parsed; InputError if it
        holds none."""
        rows = 0
        for batch in read_batches(self.path, size, progress=self.progress):
            rows += len(batch.items)
            yield Block(batch, len(batch.items))
        if not rows:
            raise InputError(f"{self.path}: holds no rows: nothing to ingest")


# Builds a source from `sf311 ingest` arguments (settings, PATH, --since, --until).
SourceFactory = Callable[[Settings, Path | None, datetime | None, datetime | None], Source]
# The sources `sf311 ingest --source NAME` reads; a new source is one more entry.
SOURCES: dict[str, SourceFactory] = {
    "socrata": SocrataSource.from_args,
    "file": FileSource.from_args,
}


def source_by_name(
    name: str,
    settings: Settings,
    path: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Source:
    """Return the source named `name` for these arguments; InputError if unknown or misused."""
    if name not in SOURCES:
        raise InputError(f"unknown source {name!r}: choose one of {', '.join(SOURCES)}")
    return SOURCES[name](settings, path, since, until)
