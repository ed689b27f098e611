"""The file-backed demo order store belongs to the first process that opens it.

Each process keeps its own in-memory copy and dumps it whole, so a second
writer would overwrite the first one's changes. The second process reads a
copy and is refused writes, with one sentence naming the holder.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.errors import SourceUnavailable
from app.sources import open_order_store

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys
    from app.sources import open_order_store
    store = open_order_store(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()                      # the test says when to change something
    store.db["orders"].delete_one({"id": 1})
    store.close()
    print("closed", flush=True)
    sys.stdin.readline()                      # and when to exit
""")

VISITOR = textwrap.dedent("""
    import json, os, sys
    from app.errors import SourceUnavailable
    from app.sources import open_order_store
    store = open_order_store(sys.argv[1])
    out = {"count": store.db["orders"].count_documents({}), "refused": None, "pid": os.getpid()}
    try:
        store.db["orders"].insert_one({"id": 99})
    except SourceUnavailable as exc:
        out["refused"] = exc.message
    store.close()
    print(json.dumps(out))
""")


def run_python(code: str, *args: str, **kw):
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def visit(url: str) -> dict:
    proc = run_python(VISITOR, url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.fixture
def store_file(tmp_path):
    path = tmp_path / "orders.json"
    url = "mongomock://" + str(path)
    store = open_order_store(url)
    store.db["orders"].insert_many([{"id": i, "status": "DRIVER_ARRIVED"} for i in (1, 2, 3)])
    store.close()  # checkpointed; the lock is let go
    return path, url


def test_second_process_reads_but_is_refused_writes_until_the_first_exits(store_file):
    path, url = store_file
    holder = run_python(HOLDER, url)
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = path.stat().st_mtime_ns, path.read_bytes()

        seen = visit(url)
        assert seen["count"] == 3
        assert seen["refused"] == (f"The demo order store is open in another process (pid {holder.pid}); "
                                   "close it there to change orders from here.")
        assert (path.stat().st_mtime_ns, path.read_bytes()) == before  # the visitor never checkpointed

        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        # Closed: the holder's change is on disk and the file is free for the next process.
        after = visit(url)
        assert after["count"] == 2 and after["refused"] is None
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    final = open_order_store(url)
    try:
        assert sorted(d["id"] for d in final.db["orders"].find({})) == [2, 3, 99]
        assert final.read_only is None
    finally:
        final.close()


def test_a_process_that_exits_without_closing_frees_the_file(store_file):
    path, url = store_file
    holder = run_python(HOLDER, url)
    assert holder.stdout.readline().strip() == "ready"
    assert visit(url)["refused"] is not None
    holder.kill()
    holder.wait(timeout=30)
    assert visit(url)["refused"] is None


def test_within_one_process_every_opener_shares_the_store_and_the_last_close_lets_go(store_file):
    path, url = store_file
    first = open_order_store(url)
    second = open_order_store(url)
    assert first is second and first.read_only is None
    first.close()
    assert visit(url)["refused"] is not None  # still open here through the second opener
    second.db["orders"].insert_one({"id": 4})
    second.close()
    assert visit(url)["refused"] is None
    again = open_order_store(url)
    try:
        assert again.db["orders"].count_documents({}) == 5  # 1-3, 4 and the visitor's 99
    finally:
        again.close()


def test_read_only_store_refuses_every_kind_of_write(store_file, tmp_path):
    path, url = store_file
    holder = run_python(HOLDER, url)
    try:
        assert holder.stdout.readline().strip() == "ready"
        store = open_order_store(url)
        try:
            assert store.read_only and store.db["orders"].find_one({"id": 2})["id"] == 2
            for write in (lambda c: c.update_one({"id": 2}, {"$set": {"status": "X"}}),
                          lambda c: c.delete_many({}),
                          lambda c: c.find_one_and_update({"id": 2}, {"$set": {"status": "X"}}),
                          lambda c: c.create_index("status")):
                with pytest.raises(SourceUnavailable, match=f"pid {holder.pid}"):
                    write(store.db["orders"])
            with pytest.raises(SourceUnavailable):
                store.db.drop_collection("orders")
            store.dirty = True
            store.checkpoint()
        finally:
            store.close()
        assert sorted(d["id"] for d in json.loads(path.read_text())["collections"]["orders"]) == [1, 2, 3]
    finally:
        holder.stdin.close()
        holder.kill()
        holder.wait(timeout=30)


def test_demo_build_and_reset_in_one_process_leave_the_store_writable(tmp_path, monkeypatch):
    from app.bootstrap import bootstrap
    from app.demo import ensure_demo_workspace
    monkeypatch.setenv("NC_DATA_DIR", str(tmp_path / "data"))
    ws = bootstrap(ensure_demo_workspace())
    try:
        orders = ws.orders()
        assert orders.read_only is None
        orders.db["orders"].delete_one({})
        fresh = bootstrap(ensure_demo_workspace(reset=True))  # while the first workspace is still open
        try:
            assert fresh.orders().read_only is None
            fresh.orders().db["orders"].insert_one({"id": 10 ** 9})
            url = fresh.config.sources["orders"].url
            assert visit(url)["refused"] is not None
        finally:
            fresh.close()
    finally:
        ws.close()
    assert visit(url)["refused"] is None
    # The first workspace's copy (of the swapped-away file) did not overwrite the new one on close.
    again = open_order_store(url)
    try:
        assert again.db["orders"].find_one({"id": 10 ** 9}) is not None
    finally:
        again.close()
