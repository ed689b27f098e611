"""Action ids, parameter fingerprints and lease tokens: one format each.

A lease token names who holds a claim or lease (``operator#action#random``):
the cart claims, the dispatch leases and the order claims all use
``lease_token``, so a support person reading a claim row sees the same shape
everywhere.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from ..jsontext import json_default


def lease_token(operator: str, action_id: str | None = None) -> str:
    """``operator#action#random`` (at most 255 characters, the owner columns' size)."""
    return f"{operator}#{action_id or 'detect'}#{uuid.uuid4().hex[:12]}"[:255]


def new_action_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:16]}"


def params_hash(kind: str, source: str, params: dict[str, Any]) -> str:
    canonical = json.dumps({"kind": kind, "source": source, "params": params},
                           sort_keys=True, default=json_default, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def ids_digest(ids: Sequence[object]) -> dict[str, object]:
    """What the ledger keeps of a long list of ids an action was given: their count and a digest of them."""
    text = ",".join(map(str, ids))
    return {"count": len(ids), "sha256": hashlib.sha256(text.encode()).hexdigest()}
