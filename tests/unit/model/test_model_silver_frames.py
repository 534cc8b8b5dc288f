"""Silver-shaped frames from API-named records (the generator's form) on explicit rows."""

from __future__ import annotations

import pandas as pd

from tests.support.silver_frames import SILVER_COLUMNS, silver_cases_from_api_frame


def test_api_strings_become_silver_types_and_utc_instants() -> None:
    raw = pd.DataFrame(
        [
            {
                "service_request_id": "16000001",
                "requested_datetime": "2024-03-01T10:00:00.000",
                "service_name": "Graffiti",
                "supervisor_district": "5",
                "neighborhoods_sffind_boundaries": "Japantown",
                "lat": "37.785",
                "long": "-122.43",
            },
            {
                "service_request_id": "16000002",
                "requested_datetime": "2024-07-01T10:00:00.000",
                "service_name": "Noise Report",
                "supervisor_district": None,
                "lat": "0.0",
                "long": "0.0",
            },
        ]
    )
    out = silver_cases_from_api_frame(raw)
    assert list(out.columns) == [f.name for f in SILVER_COLUMNS]
    assert out["service_request_id"].tolist() == [16000001, 16000002]
    # 10:00 in San Francisco: PST (UTC-8) in March before the switch, PDT (UTC-7) in July.
    assert out["requested_datetime"].tolist() == [
        pd.Timestamp("2024-03-01T18:00:00Z"),
        pd.Timestamp("2024-07-01T17:00:00Z"),
    ]
    assert out["closed_date"].isna().all()
    assert out["supervisor_district"].tolist()[0] == 5 and pd.isna(out["supervisor_district"][1])
    assert out["neighborhood"].tolist()[0] == "Japantown"
    # Null Island is no location.
    assert out["lat"].tolist()[0] == 37.785 and pd.isna(out["lat"][1])
