"""The audit log: who did what, read back across sources.

Every action's record (``ledger``) names its operator — the OS user and
host of the console that ran it (``operator_identity``) — and its role. A
refused attempt that a read-only database user cannot record goes to
``audit-local.jsonl`` in the data directory, read back with the rest.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..config import data_dir
from ..errors import ConsoleError
from ..jsontext import json_default
from ..sources import describe_db_error
from .ledger import AuditEntry, AuditPosition, configured_sources, ledger_for

if TYPE_CHECKING:
    from ..bootstrap import Workspace


def operator_identity() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name in this environment
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _local_audit_path() -> Path:
    return data_dir() / "audit-local.jsonl"


def append_local(entry: dict[str, Any]) -> None:
    path = _local_audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, default=json_default) + "\n")


def local_entries(limit: int) -> list[AuditEntry]:
    path = _local_audit_path()
    if not path.exists():
        return []
    out: list[AuditEntry] = []
    for line in path.read_text(encoding="utf-8").splitlines()[-limit:]:
        try:
            d = json.loads(line)
        except ValueError:
            continue
        out.append(AuditEntry(action_id=d["action_id"], kind=d["kind"], source=d["source"],
                              operator=d["operator"], role=d["role"], status=d["status"],
                              started_at=dt.datetime.fromisoformat(d["started_at"]),
                              finished_at=dt.datetime.fromisoformat(d["started_at"]),
                              params=d.get("params", {}), outcome=None, message=d.get("message")))
    return out


def find_action(workspace: Workspace, action_id: str) -> AuditEntry | None:
    """Look an action up in every configured source's ledger."""
    for source in configured_sources(workspace):
        try:
            entry = ledger_for(workspace, source).get(action_id)
        except (DBAPIError, SQLAlchemyError):
            continue
        if entry is not None:
            return entry
    return None


def audit_entries(workspace: Workspace, *, source: str | None = None, limit: int = 100,
                  since: dt.datetime | None = None, text: str | None = None, kind: str | None = None,
                  before: AuditPosition | None = None) -> tuple[list[AuditEntry], list[str]]:
    """Newest first, across sources; also returns one sentence per source that could not be read.

    ``text`` (literal, in the operator, action id or message) and ``kind`` filter in each
    ledger's query; ``before`` (the last entry shown: ``audit_position``) pages on.
    """
    entries: list[AuditEntry] = []
    problems: list[str] = []
    for name in configured_sources(workspace):
        if source and name != source:
            continue
        try:
            entries.extend(ledger_for(workspace, name).entries(limit, since, text=text, kind=kind, before=before))
        except ConsoleError as exc:
            problems.append(exc.message)
        except (DBAPIError, SQLAlchemyError) as exc:
            problems.append(describe_db_error(name, exc))
    needle = (text or "").lower()
    entries.extend(e for e in local_entries(limit) if (not source or e.source == source)
                   and (not kind or e.kind == kind) and (before is None or audit_position(e) < before)
                   and (not needle or any(needle in (v or "").lower() for v in (e.operator, e.action_id, e.message))))
    entries.sort(key=audit_position, reverse=True)
    return entries[:limit], problems


def audit_position(entry: AuditEntry) -> AuditPosition:
    """Where ``entry`` stands in the newest-first audit log."""
    return (entry.started_at or dt.datetime.min, entry.action_id)
