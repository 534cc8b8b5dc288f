"""San Francisco as the data knows it: the source's local time zone and the city's bounds."""

from __future__ import annotations

from zoneinfo import ZoneInfo

# The source's timestamps are floating wall-clock times in this zone.
LOCAL_TZ = "America/Los_Angeles"
LOCAL_ZONE = ZoneInfo(LOCAL_TZ)

# Land area with Treasure Island, padded by about 1 km; the Farallon Islands are left out on
# purpose: no street case is filed there.
SF_LAT = (37.695, 37.840)
SF_LONG = (-122.525, -122.345)
