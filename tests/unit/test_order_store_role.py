"""The effective role on the order store: what MongoDB says its user may do, or the configured role and why."""
from __future__ import annotations

import os

import mongomock
import pytest

from app.grants import order_store_role
from app.status import check_source, effective_role, role_line

REAL = os.environ.get("NC_TEST_MONGO_URI")
FALLBACK = ("the orders database does not say what its user may do (it answers no connectionStatus); "
            "the configured role holds")


class _Answers:
    """A database whose connectionStatus answer is the given document, as a MongoDB server sends it."""

    name = "orders"

    def __init__(self, status: dict):
        self.status = status

    def command(self, name, **kwargs):
        assert name == "connectionStatus" and kwargs == {"showPrivileges": True}
        return self.status


def answers(*privileges: dict, users=({"user": "nc", "db": "admin"},)) -> _Answers:
    return _Answers({"authInfo": {"authenticatedUsers": list(users), "authenticatedUserRoles": [],
                                  "authenticatedUserPrivileges": list(privileges)}, "ok": 1.0})


def on(db: str, collection: str, *actions: str) -> dict:
    return {"resource": {"db": db, "collection": collection}, "actions": list(actions)}


READ = ("find", "listCollections", "listIndexes", "collStats", "dbStats")
READ_WRITE = READ + ("insert", "update", "remove", "createIndex", "dropCollection")


@pytest.mark.skipif(bool(REAL), reason="mongomock only: a real server answers connectionStatus")
def test_mongomock_cannot_say_so_the_configured_role_holds_with_the_reason(workspace_factory, order_store_url):
    assert order_store_role(mongomock.MongoClient().orders) == (None, FALLBACK)
    ws = workspace_factory(orders=order_store_url, role="admin")
    status = check_source(ws, "orders")
    assert status.reachable and status.database_role is None
    assert status.database_role_reason == FALLBACK
    assert effective_role("admin", [status]) == ("admin", None)
    assert role_line("admin", [status]) == "role: admin"


def test_a_user_with_the_read_role_is_a_viewer():
    assert order_store_role(answers(on("orders", "", *READ))) == (
        "viewer", "the orders database user cannot insert into email_log")


def test_read_write_on_the_database_is_an_admin_and_on_another_database_a_viewer():
    assert order_store_role(answers(on("orders", "", *READ_WRITE))) == ("admin", None)
    assert order_store_role(answers(on("", "", *READ_WRITE))) == ("admin", None)      # every database
    assert order_store_role(answers(on("orders", "", *READ), on("shop", "", *READ_WRITE)))[0] == "viewer"


def test_writes_without_remove_make_an_operator_who_cannot_delete():
    operator = on("orders", "", *READ, "insert", "update")
    assert order_store_role(answers(operator)) == ("operator", "the orders database user cannot delete")
    role, note = effective_role("admin", [_status_with(*order_store_role(answers(operator)))])
    assert (role, note) == ("operator", "config says admin; the orders database user cannot delete")


def test_collection_grants_count_and_root_may_do_everything():
    per_collection = [on("orders", c, "insert", "update") for c in ("email_log", "nc_email_claims", "nc_actions")]
    assert order_store_role(answers(*per_collection))[0] == "operator"
    root = {"resource": {"anyResource": True}, "actions": ["anyAction"]}
    assert order_store_role(answers(root)) == ("admin", None)
    cluster_only = {"resource": {"cluster": True}, "actions": ["insert", "update", "remove"]}
    assert order_store_role(answers(cluster_only))[0] == "viewer"


def test_no_authenticated_user_means_no_access_control():
    role, why = order_store_role(answers(users=()))
    assert role == "admin" and "without access control" in why


def test_a_server_that_refuses_the_command_leaves_the_configured_role():
    import pymongo.errors

    class Refusing(_Answers):
        def command(self, name, **kwargs):
            raise pymongo.errors.OperationFailure("not authorized on admin to execute command")
    role, why = order_store_role(Refusing({}))
    assert role is None
    assert why == ("the orders database did not say what its user may do (not authorized on admin to execute "
                   "command); the configured role holds")


@pytest.mark.skipif(not REAL, reason="needs a real MongoDB (NC_TEST_MONGO_URI)")
def test_a_real_server_says_what_its_user_may_do(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url, role="admin")
    status = check_source(ws, "orders")
    assert status.reachable
    assert status.database_role in ("viewer", "operator", "admin"), status.database_role_reason


def _status_with(role, why):
    from app.status import SourceStatus
    return SourceStatus(name="orders", kind="mongo", backend="mongodb", target="db/orders", reachable=True,
                        database_role=role, database_role_reason=why)
