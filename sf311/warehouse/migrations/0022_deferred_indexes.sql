-- A bounded run into an empty `cases` (the first backfill of a warehouse) drops the table's
-- secondary indexes and builds them once after its last batch, which costs a fraction of
-- keeping them up to date row by row (sf311/warehouse/indexes.py). Their definitions wait here
-- meanwhile, so that a run killed in between still gets them back.
CREATE TABLE deferred_indexes (
    name        text        PRIMARY KEY,
    definition  text        NOT NULL,
    deferred_at timestamptz NOT NULL DEFAULT now()
);
