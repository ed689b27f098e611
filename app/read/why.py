"""Why a duplicate group probably happened, said from its evidence (the Duplicates page's Why column).

Pure rules over a ``DuplicateGroup``'s members, earliest first:

* copies milliseconds apart (under ``RACE_GAP``): concurrent workers — a race;
* dispatch: the same event under two timestamped dispatch ids (the seed's
  ``{type}_{issue}_{actor}_{epoch ms}`` keys): a retry that made a new key;
  a member with no dispatch id beside one with it: a legacy row;
* a copy sent after the in-progress window (a claim expired, or a resend);
* a copy the console's own retry sent (the audit names the action).

The first rule that matches a pair of neighbours names it; the text says
the gap it saw, so support can check the claim.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from .models import DuplicateGroup

RACE_GAP = dt.timedelta(seconds=2)
# dispatch ids the seed's flawed producer made: a millisecond timestamp at the end
_TIMESTAMPED = re.compile(r"_\d{12,14}$")


def _time(member: Mapping[str, Any]) -> dt.datetime | None:
    for field in ("sent_at", "created_at"):
        value = member.get(field)
        if isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value)
            except ValueError:
                continue
    return None


def _gap_words(gap: dt.timedelta) -> str:
    seconds = gap.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def explain(group: DuplicateGroup, *, in_progress: dt.timedelta = dt.timedelta(minutes=2),
            console_retries: Mapping[str, str] | None = None) -> str:
    """One sentence: the likely cause. ``console_retries``: member or key id → the retry action that sent it."""
    members = group.evidence
    retried = console_retries or {}
    for m in members[1:]:
        action = retried.get(str(m.get("id")))
        if action:
            return f"a copy the console's own retry sent ({action})"
    times = [_time(m) for m in members]
    gaps = [b - a for a, b in zip(times, times[1:]) if a is not None and b is not None]
    smallest = min(gaps, default=None)
    # Rows that carry a dispatch id column (None on the legacy rows written before it existed).
    ids = [m.get("dispatch_id") for m in members] if any("dispatch_id" in m for m in members) else []
    if ids and any(i is None for i in ids) and any(i is not None for i in ids):
        return "a legacy row without a dispatch id beside one with it (written before and after the key existed)"
    if smallest is not None and smallest < RACE_GAP:
        how = ""
        if ids and len({i for i in ids if i}) > 1 and all(i and _TIMESTAMPED.search(i) for i in ids):
            how = ", each under its own timestamped dispatch id"
        return f"copies {_gap_words(smallest)} apart: concurrent workers sent the same event (a race){how}"
    if ids and len(set(ids)) > 1 and all(i and _TIMESTAMPED.search(i) for i in ids):
        return (f"the same event under {len(set(ids))} timestamped dispatch ids, {_gap_words(smallest)} apart: "
                "a retry made a new key" if smallest is not None else
                "the same event under several timestamped dispatch ids: a retry made a new key")
    if smallest is not None and smallest > in_progress:
        return (f"a resend {_gap_words(smallest)} later, after the {_gap_words(in_progress)} in-progress window "
                "(the first send's claim had expired or was never taken)")
    if smallest is not None:
        return f"a resend {_gap_words(smallest)} later, within the in-progress window"
    return "more than one copy of the same business key"
