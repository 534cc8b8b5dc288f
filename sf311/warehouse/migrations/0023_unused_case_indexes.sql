-- Three indexes of `cases` that no reader uses any more, each costing its build after a backfill
-- and its upkeep at every load (plans of every dashboard page and README query on 8M cases):
-- - cases_category_idx (service_name, requested_datetime): every reader of one category's cases
--   also asks deleted_at IS NULL, which cases_category_points_idx (same keys) serves;
-- - cases_open_idx: open cases are read by category through cases_open_groups_idx, by id
--   through cases_open_id_idx;
-- - cases_status_idx: only a bare count(*) used it (the smallest index); a status is "Open" or
--   "Closed", which narrows no query to a few rows.
DROP INDEX IF EXISTS cases_category_idx, cases_open_idx, cases_status_idx;
-- A bounded run killed before its last batch would build them again.
DELETE FROM deferred_indexes
WHERE name IN ('cases_category_idx', 'cases_open_idx', 'cases_status_idx');
