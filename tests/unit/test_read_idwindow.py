"""The lagged id window: every committed row read exactly once, whatever the commit order."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert

from app.read import idwindow
from app.read.idwindow import IdWindow

_meta = MetaData()
_log = Table("log", _meta, Column("id", Integer, primary_key=True))


def test_note_splits_gaps_and_records_holes():
    w = IdWindow.at(10)
    idwindow.note(w, [12, 13, 17])
    assert w.last == 17 and w.gaps == [[11, 11], [14, 16]]
    idwindow.note(w, [15, 11])
    assert w.gaps == [[14, 14], [16, 16]]
    idwindow.settle(w, now=100.0, lag=120.0)
    assert (w.pid, w.pat, w.floor) == (17, 100.0, 10)
    idwindow.settle(w, now=219.0, lag=120.0)
    assert w.floor == 10
    idwindow.note(w, [20])
    idwindow.settle(w, now=220.0, lag=120.0)
    assert w.floor == 17 and w.gaps == [[18, 19]] and (w.pid, w.pat) == (20, 220.0)
    assert IdWindow.from_json(w.to_json()) == w


@settings(max_examples=60, deadline=None)
@given(commits=st.permutations(range(1, 25)), reads=st.lists(st.integers(1, 6), min_size=30, max_size=30),
       lost=st.sets(st.integers(1, 24), max_size=4), span=st.integers(0, 5))
def test_every_committed_id_read_once(commits, reads, lost, span):
    """Ids are taken in order; each commits at most ``span`` steps after its position in a permutation
    (the lag); some roll back. Reads interleave with commits."""
    engine = create_engine("sqlite://")
    _meta.create_all(engine)
    # Commit order: id i commits at a step within ``span`` of its position in the permutation.
    order = sorted(range(1, 25), key=lambda i: (min(i + commits.index(i) % (span + 1), 24), i))
    w = IdWindow.at(0)
    got: list[int] = []
    clock = 0.0
    with engine.connect() as conn:
        for step, i in enumerate(order):
            if i not in lost:
                conn.execute(insert(_log), {"id": i})
                conn.commit()
            clock += 1.0
            rows, _more = idwindow.read(conn, [_log.c.id], _log.c.id, w, reads[step % len(reads)])
            idwindow.note(w, [r[0] for r in rows])
            idwindow.settle(w, clock, lag=float(span + 2))
            got += [r[0] for r in rows]
        while True:
            rows, more = idwindow.read(conn, [_log.c.id], _log.c.id, w, 5)
            idwindow.note(w, [r[0] for r in rows])
            got += [r[0] for r in rows]
            if not more:
                break
    assert sorted(got) == [i for i in range(1, 25) if i not in lost]
    assert len(got) == len(set(got))
