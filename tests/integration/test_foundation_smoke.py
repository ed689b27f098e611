from sqlalchemy import inspect


def test_db_upgrade_twice_on_each_backend(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"), dispatch=sql_url("dispatch"))
    from app.schema_setup import upgrade_workspace
    first = upgrade_workspace(ws)
    second = upgrade_workspace(ws)
    assert [r["ok"] for r in first] == [True, True]
    assert first == second
    names = set(inspect(ws.engine("cart")).get_table_names())
    assert {"cart_abandonment_log", "users", "nc_action", "nc_archive"} <= names
