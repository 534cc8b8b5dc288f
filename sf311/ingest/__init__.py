"""Ingestion: Socrata pages and DataSF files -> normalized cases -> Avro on Kafka."""


class IngestError(RuntimeError):
    """An ingest run failed for good; the message says where and why."""
