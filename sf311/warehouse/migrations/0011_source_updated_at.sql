-- Case schema v2 (schemas/case.v2.avsc) adds source_updated_at: Socrata's :updated_at, when the
-- source last wrote the row. Nullable with no default, like the field: version-1 messages, files
-- and the generator leave it null. Adding a nullable column rewrites no row and takes a brief
-- lock only, so it runs while the stream loads; the stream writes the column once restarted on
-- the new code. The analyst views name their columns and stay as they are.
ALTER TABLE cases ADD COLUMN IF NOT EXISTS source_updated_at timestamptz;

COMMENT ON COLUMN cases.source_updated_at IS
    'Socrata''s :updated_at as an instant: when the source last wrote the row, even when '
    'updated_datetime did not move; null for version-1 messages, files and the generator.';
