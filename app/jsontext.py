"""JSON text of the console's values: the CLI's ``--json`` output and the audit log's stored parameters.

Read models and ledgers hold datetimes, decimals and ObjectIds, which JSON
has no type for: they are written as ISO text, decimal text and plain text.
"""
from __future__ import annotations

import datetime
import decimal
import json


def json_default(value):
    """JSON encoder for the values read models return (datetimes, decimals, ObjectIds)."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def dumps(obj) -> str:
    return json.dumps(obj, default=json_default, sort_keys=False)
