-- The map's heat cells and markers of one category: its newest located cases, read from this
-- index alone in time order (8M cases, the largest category over the whole history: 3.7 s
-- with the page cache cold, 0.44 s warm -> 0.04 s), instead of walking every category's cases
-- by requested_datetime and fetching each row to test its category, location and deletion.
-- It needs the category as an equality (sf311.dashboard.filters): `= ANY` gives no time order.
CREATE INDEX IF NOT EXISTS cases_category_points_idx
    ON cases (service_name, requested_datetime)
    INCLUDE (lat, long, quality_flags, service_request_id)
    WHERE deleted_at IS NULL;
