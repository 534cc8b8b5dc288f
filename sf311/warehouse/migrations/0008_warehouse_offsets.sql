-- How far each Kafka partition is loaded into cases: every message below next_offset is in
-- cases or was rejected. Updated in the transaction of every loaded batch, by the warehouse
-- query and by a bounded run (`sf311 stream --once`), whose lake query loads the warehouse from
-- the rows it decoded; the warehouse query then skips what lies below, so it neither decodes
-- nor upserts those messages again.
CREATE TABLE warehouse_offsets (
    topic            text NOT NULL,
    kafka_partition  integer NOT NULL,
    next_offset      bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);

COMMENT ON TABLE warehouse_offsets IS
    'Per Kafka partition: every message below next_offset is loaded into cases or was rejected.';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analyst') THEN
        GRANT SELECT ON warehouse_offsets TO analyst;
    END IF;
END
$$;
