"""When the champion is re-evaluated on Manga109: the preset's `evaluation.schedule` section.

Apart from the rest of the evaluation config (mangacolor/eval/report.py) because the Dagster code
location builds the schedule when it loads, and that must not import the metrics' torch code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ScheduleConfig(BaseModel):
    cron: str = "0 4 * * 1"  # Mondays 04:00
    timezone: str = "UTC"
    status: Literal["RUNNING", "STOPPED"] = "RUNNING"


def preset_schedule(preset: dict) -> ScheduleConfig:
    """The schedule of `preset` (defaults where it has none)."""
    return ScheduleConfig.model_validate((preset.get("evaluation") or {}).get("schedule") or {})
