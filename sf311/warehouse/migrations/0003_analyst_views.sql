-- Views for analysts. Days and ages are counted in San Francisco local time.

CREATE VIEW open_backlog AS
SELECT
    service_name AS category,
    CASE
        WHEN now() - requested_datetime < interval '1 day'   THEN '0-1 d'
        WHEN now() - requested_datetime < interval '7 days'  THEN '1-7 d'
        WHEN now() - requested_datetime < interval '30 days' THEN '7-30 d'
        WHEN now() - requested_datetime < interval '90 days' THEN '30-90 d'
        ELSE '90+ d'
    END AS age_bucket,
    count(*)                AS open_cases,
    min(requested_datetime) AS oldest_requested
FROM cases
WHERE closed_date IS NULL
GROUP BY 1, 2;

CREATE VIEW daily_volume AS
SELECT
    (requested_datetime AT TIME ZONE 'America/Los_Angeles')::date AS day,
    service_name                                                  AS category,
    count(*)                                                      AS opened,
    count(*) FILTER (WHERE closed_date IS NOT NULL)               AS closed_so_far
FROM cases
GROUP BY 1, 2;

CREATE VIEW resolution_times AS
SELECT
    service_name                                                          AS category,
    neighborhood,
    count(*)                                                              AS closed_cases,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_hours)         AS p50_hours,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY resolution_hours)         AS p90_hours
FROM cases
WHERE resolution_hours IS NOT NULL
GROUP BY 1, 2;

CREATE VIEW recent_cases AS
SELECT
    service_request_id, requested_datetime, updated_datetime, closed_date, status_description,
    service_name AS category, service_subtype, neighborhood, address, lat, long, source
FROM cases
ORDER BY requested_datetime DESC
LIMIT 1000;
