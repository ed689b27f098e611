"""The simulator: the seed's naive dispatch duplicates, the guarded one never does, at the same load."""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest
from sqlalchemy import select

from app.errors import PermissionDenied, SchemaMissing, UsageError
from app.schema import dispatch_log, issue_watchers, issues, notifications
from app.simulate import check_arguments, load_driver, run_simulation


def expected_and_actual(engine):
    """Per delivered event: the recipients it should have, and the notifications it got (SQL, not the simulator)."""
    with engine.connect() as conn:
        people = {r.id: {r.reporter_id, r.assignee_id} - {None}
                  for r in conn.execute(select(issues.c.id, issues.c.reporter_id, issues.c.assignee_id))}
        for issue_id, user_id in conn.execute(select(issue_watchers.c.issue_id, issue_watchers.c.user_id)):
            people[issue_id].add(user_id)
        logs = conn.execute(select(dispatch_log.c.dispatch_id, dispatch_log.c.issue_id, dispatch_log.c.comment_id,
                                   dispatch_log.c.actor_user_id, dispatch_log.c.dispatch_type,
                                   dispatch_log.c.status, dispatch_log.c.recipients_count)).all()
        rows = conn.execute(select(notifications.c.user_id, notifications.c.type, notifications.c.issue_id,
                                   notifications.c.comment_id, notifications.c.actor_user_id,
                                   notifications.c.dispatch_id)).all()
    return people, logs, rows


@pytest.mark.mariadb
def test_naive_duplicates_and_guarded_does_not_at_the_same_load(workspace_factory, mariadb_database):
    load = {"workers": 8, "events": 120, "seed": 42}
    figures = {}
    for mode in ("naive", "guarded"):
        ws = workspace_factory(dispatch=mariadb_database(mode), role="admin")
        result = run_simulation(ws.config, "dispatch", mode, load["workers"], load["events"], seed=load["seed"])
        people, logs, rows = expected_and_actual(ws.engine("dispatch"))
        by_event = Counter((r.user_id, r.type, r.issue_id, r.comment_id, r.actor_user_id) for r in rows)
        assert result.attempts == 3 * load["events"]
        assert result.produced == len(rows)                                      # exact, by SQL
        assert result.duplicates == sum(n - 1 for n in by_event.values())
        # Every completed log row delivered exactly its recipients, under its own key.
        per_key = defaultdict(set)
        for r in rows:
            per_key[r.dispatch_id].add(r.user_id)
        completed = [log for log in logs if log.status == "completed"]
        for log in completed:
            want = people[log.issue_id] - {log.actor_user_id}
            assert per_key[log.dispatch_id] == want and log.recipients_count == len(want)
        assert sum(log.recipients_count for log in completed) == len(rows)
        figures[mode] = (result, logs, by_event)

    naive, naive_logs, _ = figures["naive"]
    guarded, guarded_logs, guarded_events = figures["guarded"]
    # The seed's millisecond keys: more deliveries than events, hence duplicates.
    assert naive.duplicates > 0
    assert sum(1 for log in naive_logs if log.status == "completed") > load["events"]
    # Guarded: one log row per event, each completed, one notification per recipient.
    assert guarded.duplicates == 0 and guarded.errors == 0
    assert len(guarded_logs) == load["events"] and {log.status for log in guarded_logs} == {"completed"}
    assert set(guarded_events.values()) == {1}
    # The same events (same seed): the guarded run delivered exactly the distinct events the naive one did.
    assert guarded.produced == naive.produced - naive.duplicates


@pytest.mark.mariadb
def test_guarded_simulation_across_processes(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    result = run_simulation(ws.config, "dispatch", "guarded", workers=4, events=60, processes=2, seed=7)
    people, logs, rows = expected_and_actual(ws.engine("dispatch"))
    assert (result.attempts, result.errors, result.duplicates) == (180, 0, 0)
    assert len(logs) == 60 and result.produced == len(rows)
    assert len(rows) == sum(len(people[log.issue_id] - {log.actor_user_id}) for log in logs)


def test_simulation_on_sqlite(workspace_factory, tmp_path):
    ws = workspace_factory(dispatch=f"sqlite:///{tmp_path / 'dispatch.db'}")
    result = run_simulation(ws.config, "dispatch", "guarded", workers=4, events=30, seed=3)
    _, logs, rows = expected_and_actual(ws.engine("dispatch"))
    assert (result.events, result.duplicates, result.errors) == (30, 0, 0)
    assert len(logs) == 30 and result.produced == len(rows) == sum(log.recipients_count for log in logs)


def test_simulate_refuses_viewers_and_missing_schemas(workspace_factory, tmp_path):
    viewer = workspace_factory(dispatch=f"sqlite:///{tmp_path / 'a.db'}", role="viewer")
    with pytest.raises(PermissionDenied, match="viewer role may not run the simulator"):
        run_simulation(viewer.config, "dispatch", "guarded", workers=2, events=5)
    bare = workspace_factory(dispatch=f"sqlite:///{tmp_path / 'b.db'}", upgrade=False)
    with pytest.raises(SchemaMissing, match="db upgrade"):
        run_simulation(bare.config, "dispatch", "guarded", workers=2, events=5)


@pytest.mark.parametrize("args, message", [
    (("dispatch", "fast", 4, 10, 1), "Unknown mode 'fast'"),
    (("nowhere", "naive", 4, 10, 1), "Unknown source 'nowhere'"),
    (("dispatch", "naive", 0, 10, 1), "--workers must be a whole number from 1 to 128"),
    (("dispatch", "naive", 4, 100_001, 1), "--events must be a whole number from 1 to 100000"),
    (("dispatch", "naive", 2, 10, 3), r"--processes \(3\) cannot exceed --workers \(2\)"),
])
def test_arguments_are_checked(args, message):
    with pytest.raises(UsageError, match=message):
        check_arguments(*args)


def test_a_missing_driver_is_one_sentence():
    with pytest.raises(UsageError, match=r"^The simulator has no driver for the nowhere source"):
        load_driver("nowhere")


def test_simulate_command(workspace_factory, tmp_path, capsys):
    from app.cli import run
    url = f"sqlite:///{tmp_path / 'dispatch.db'}"
    workspace_factory(dispatch=url)
    cfg = tmp_path / "nc.toml"
    cfg.write_text(f'[sources.dispatch]\nurl = "{url}"\n[console]\nrole = "admin"\n')
    assert run(["--config", str(cfg), "simulate", "--mode", "guarded", "--workers", "3", "--events", "12",
                "--seed", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"mode", "events", "produced", "duplicates", "seconds"} <= set(out)
    assert (out["mode"], out["events"], out["duplicates"]) == ("guarded", 12, 0) and out["produced"] > 0
    assert run(["--config", str(cfg), "simulate", "--mode", "naive", "--workers", "2", "--events", "4"]) == 0
    assert capsys.readouterr().out.startswith("naive dispatch: 4 events, 12 attempts in ")
    assert run(["--config", str(cfg), "simulate", "--mode", "guarded", "--workers", "-3", "--events", "5"]) == 2
    assert "argument --workers: must be a whole number from 1 to 128, not -3" in capsys.readouterr().err
    assert run(["--config", str(cfg), "simulate", "--mode", "guarded", "--workers", "2", "--events", "5",
                "--processes", "4"]) == 2
    assert "cannot exceed --workers" in capsys.readouterr().err
