"""Bodies of the Lux device uploads (devlog and movement) that tests of more than one
module send or expect."""

from __future__ import annotations

DEVLOG_SAVED = {"statusCode": 200, "message": "Devlog saved successfully"}
MOVEMENT_SAVED = {"statusCode": 200, "message": "Movement log saved successfully"}


def legacy_entry(lux, log_file_id: int = 0) -> dict:
    """The earlier document's example entry (bare-array body, finish_flag a string)."""
    return {
        "real_user_id": lux.child["id"],
        "device_id": lux.device["id"],
        "unique_id": lux.device["unique_id"],
        "detail_data": {
            "treatment_date": "2024-12-05T14:06:47",
            "movement": 1,
            "finish_flag": "2",
            "last_intensity": 2,
            "treatment_time": 416,
            "log_data": "",
        },
        "log_file_id": log_file_id,
    }
