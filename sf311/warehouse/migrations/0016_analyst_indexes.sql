-- Indexes that let the README's analyst queries over all of `cases` read a small index instead
-- of the whole table (seconds at the city's 8M cases).

-- resolution_times for one category: its resolved rows, grouped and ordered as the view needs.
CREATE INDEX cases_resolved_idx ON cases (service_name, neighborhood, resolution_hours)
    WHERE resolution_hours >= 0 AND closure_kind = 'resolved'
      AND NOT quality_flags && ARRAY['closed_before_opened', 'closed_date_invalid']
      AND deleted_at IS NULL;

-- The flagged cases alone (0.5 % of the 8M benchmark's cases): counts per flag without reading the rest.
CREATE INDEX cases_flagged_idx ON cases (service_request_id) INCLUDE (quality_flags)
    WHERE quality_flags <> '{}';
