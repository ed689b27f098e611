"""Every window test works in a data directory of its own, without the OS keyring."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NC_NO_KEYRING", "1")
    return tmp_path / "data"
