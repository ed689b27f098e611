"""Configuration errors are one sentence naming the file, the key and the problem."""
from pathlib import Path

import pytest

from app.config import SourceConfig, load_config
from app.errors import EXIT_USAGE, ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def error_of(path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and "Traceback" not in message


def test_a_full_file_loads(tmp_path):
    p = write(tmp_path, """
[sources.orders]
url = "mongodb://db.example.com:27017/orders"
[sources.cart]
url = "mysql+pymysql://console@db.example.com:3306/cart"
[sources.dispatch]
url = "sqlite:////var/lib/dispatch.db"
[console]
role = "operator"
[thresholds]
dispatch_stuck_minutes = 7
duplicate_window_hours = 12
[mail]
transport = "smtp"
host = "smtp.example.com"
port = 587
""")
    cfg = load_config(p)
    assert sorted(cfg.sources) == ["cart", "dispatch", "orders"]
    assert cfg.role == "operator"
    assert cfg.thresholds.dispatch_stuck_minutes == 7
    assert cfg.thresholds.cart_in_progress_minutes == 2   # default kept
    assert cfg.thresholds.duplicate_window_hours == 12
    assert (cfg.mail.transport, cfg.mail.port) == ("smtp", 587)
    assert cfg.demo is False


def test_any_source_may_be_absent(tmp_path):
    cfg = load_config(write(tmp_path, '[sources.cart]\nurl = "sqlite:////tmp/cart.db"\n'))
    assert list(cfg.sources) == ["cart"]
    with pytest.raises(ConfigError, match=r"Source 'orders' is not configured in .*\[sources.orders\]"):
        cfg.source("orders")


def test_missing_file_names_it(tmp_path):
    err = error_of(tmp_path / "nope.toml")
    assert err.exit_code == EXIT_USAGE
    assert str(tmp_path / "nope.toml") in err.message and "does not exist" in err.message
    assert one_sentence(err.message)


def test_malformed_toml_names_file_and_line(tmp_path):
    p = write(tmp_path, '[sources.cart]\nurl = "sqlite:///x.db\n')
    err = error_of(p)
    assert str(p) in err.message and "not valid TOML" in err.message and "line 2" in err.message
    assert one_sentence(err.message)


@pytest.mark.parametrize("text, needles", [
    ('[sources.billing]\nurl = "sqlite:///b.db"\n', ["sources.billing", "unknown source", "orders, cart, dispatch"]),
    ('[sources.cart]\nurl = "oracle://h/cart"\n', ["sources.cart.url", "unsupported scheme 'oracle'"]),
    ('[sources.orders]\nurl = "mysql+pymysql://h/orders"\n', ["sources.orders.url", "mongodb://"]),
    ('[sources.cart]\nurl = "mongodb://h/cart"\n', ["sources.cart.url", "SQL URL"]),
    ('[sources.cart]\nurl = "mysql+pymysql://app:s3cret@h:3306/cart"\n', ["sources.cart.url", "holds a password", "NC_CART_PASSWORD"]),
    ('[sources.cart]\nurl = "cart.db"\n', ["sources.cart.url", "must be a URL"]),
    ('[sources.cart]\nurl = "mysql+pymysql://h:99999/cart"\n', ["invalid port '99999'"]),
    ('[thresholds]\ndispatch_stuck_minutes = -5\n', ["thresholds.dispatch_stuck_minutes", "positive number", "-5"]),
    ('[thresholds]\ndispatch_stuck_minutes = "five"\n', ["thresholds.dispatch_stuck_minutes", "positive number"]),
    ('[thresholds]\nstuck = 5\n', ["thresholds.stuck", "unknown"]),
    ('[console]\nrole = "root"\n', ["console.role", "viewer, operator or admin", "'root'"]),
    ('[mail]\ntransport = "pigeon"\n', ["mail.transport", "smtp or outbox"]),
    ('[extras]\nx = 1\n', ["key 'extras'", "unknown"]),
    ('[actions]\npool_size = 0\n', ["actions.pool_size", "from 1 to 64", "0"]),
    ('[actions]\npool_size = 65\n', ["actions.pool_size", "from 1 to 64", "65"]),
    ('[actions]\npool_size = "4"\n', ["actions.pool_size", "whole number"]),
    ('[actions]\nworkers = 4\n', ["actions.workers", "unknown"]),
])
def test_bad_values_are_one_sentence_naming_the_key(tmp_path, text, needles):
    p = write(tmp_path, text)
    err = error_of(p)
    assert err.exit_code == EXIT_USAGE
    assert err.message.startswith(str(p))
    for needle in needles:
        assert needle in err.message, err.message
    assert one_sentence(err.message)


def test_password_comes_from_the_environment_not_the_file(monkeypatch):
    source = SourceConfig("cart", "mysql+pymysql://app@h:3306/cart")
    monkeypatch.setenv("NC_NO_KEYRING", "1")
    monkeypatch.delenv("NC_CART_PASSWORD", raising=False)
    assert source.password() is None
    monkeypatch.setenv("NC_CART_PASSWORD", "from-env")
    assert source.password() == "from-env"


def test_default_location_follows_nc_config(monkeypatch, tmp_path):
    p = write(tmp_path, '[sources.cart]\nurl = "sqlite:////tmp/c.db"\n')
    monkeypatch.setenv("NC_CONFIG", str(p))
    assert load_config().path == p


def test_a_config_without_a_role_is_a_viewer(tmp_path):
    """Fail closed: only a file that says so makes the console an operator or admin."""
    cfg = load_config(write(tmp_path, '[sources.cart]\nurl = "sqlite:////tmp/cart.db"\n'))
    assert cfg.role == "viewer"
    cfg = load_config(write(tmp_path, '[console]\n[sources.cart]\nurl = "sqlite:////tmp/cart.db"\n'))
    assert cfg.role == "viewer"


def test_the_demo_workspace_alone_defaults_to_admin(tmp_path):
    from app.demo import demo_config
    assert demo_config(tmp_path).role == "admin"


def test_the_retry_pool_defaults_to_four_connections(tmp_path):
    cfg = load_config(write(tmp_path, '[sources.cart]\nurl = "sqlite:////tmp/cart.db"\n'))
    assert cfg.actions.pool_size == 4
    cfg = load_config(write(tmp_path, '[actions]\npool_size = 64\n'))
    assert cfg.actions.pool_size == 64
