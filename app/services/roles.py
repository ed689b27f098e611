"""Roles: what each console role may do, checked in the service layer.

A refused attempt is audited (in the source's ledger, or the local audit
file when the database user may not write it) and raises PermissionDenied
(CLI exit 3). ``db grants`` (``app.grants``) makes the same rule hold in the
database itself.
"""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import PermissionDenied
from ..sqlutil import utcnow
from .audit import append_local, operator_identity
from .ledger import ledger_for
from .tokens import params_hash

if TYPE_CHECKING:
    from ..bootstrap import Workspace

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"retry", "simulate"}),
    "admin": frozenset({"retry", "cleanup", "undo", "simulate", "simulate_naive"}),
}


def allowed(role: str, kind: str) -> bool:
    return kind in ROLE_PERMISSIONS.get(role, frozenset())


def require_role(workspace: Workspace, kind: str, source: str, params: dict[str, Any],
                 action_id: str | None = None) -> None:
    """Refuse (audited) before anything else happens when the role may not ``kind``."""
    if not allowed(workspace.role, kind):
        refuse(workspace, kind, source, params, action_id)


def refuse(workspace: Workspace, kind: str, source: str, params: dict[str, Any], action_id: str | None = None,
           message: str | None = None) -> NoReturn:
    """Audit a refused attempt and raise PermissionDenied."""
    role = workspace.role
    operator = operator_identity()
    may = sorted(r for r, kinds in ROLE_PERMISSIONS.items() if kind in kinds)
    message = message or f"The {role} role may not {kind}: it takes the {' or '.join(may) or 'no'} role."
    aid = f"refused-{uuid.uuid4().hex[:16]}"
    params = dict(params, requested_action_id=action_id) if action_id else params
    record = {"action_id": aid, "kind": kind, "source": source, "operator": operator, "role": role,
              "status": "refused", "started_at": utcnow(), "params": params, "message": message}
    try:
        ledger_for(workspace, source).refuse(aid, kind, params, params_hash(kind, source, params),
                                             operator, role, message)
    except Exception:  # a read-only database user cannot write the ledger: keep it locally
        append_local(record)
    raise PermissionDenied(message)
