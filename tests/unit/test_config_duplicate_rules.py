"""Config-defined duplicate rules: defaults and one-sentence errors for rules that could not scan."""
from pathlib import Path

import pytest

from app.config import load_config
from app.errors import EXIT_USAGE, ConfigError

RULE = '[[duplicate_rules]]\nname = "{name}"\nsource = "{source}"\ntable = "t"\nkey = {key}\ntime_column = "at"\n'


def write(tmp_path: Path, *rules: dict) -> Path:
    p = tmp_path / "config.toml"
    p.write_text("".join(RULE.format(**{"name": "extra", "source": "cart", "key": '["k"]', **r}) for r in rules),
                 encoding="utf-8")
    return p


def error_of(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == EXIT_USAGE
    message = info.value.message
    assert message.startswith(str(path)) and "\n" not in message and message.endswith(".")
    return message


def test_id_column_defaults_to_the_document_id_for_orders_and_id_for_sql(tmp_path):
    rules = load_config(write(tmp_path, {"name": "docs", "source": "orders"}, {"name": "rows"})).duplicate_rules
    assert [(r.name, r.id_column) for r in rules] == [("docs", "_id"), ("rows", "id")]


@pytest.mark.parametrize("key", ["[]", '""', "3"])
def test_a_rule_needs_a_key(tmp_path, key):
    message = error_of(write(tmp_path, {"key": key}))
    assert "duplicate_rules[0].key" in message


def test_a_key_column_named_twice_is_refused(tmp_path):
    assert "names a column twice" in error_of(write(tmp_path, {"key": '["k", "k"]'}))


def test_rule_names_are_unique(tmp_path):
    message = error_of(write(tmp_path, {"name": "assets"}, {"name": "other"}, {"name": "assets", "source": "dispatch"}))
    assert "duplicate_rules[2].name" in message and "'assets'" in message and "duplicate_rules[0]" in message


@pytest.mark.parametrize("name", ["cart_sent_within_window", "dispatch_same_event", "order_email_per_event"])
def test_built_in_rule_names_are_reserved(tmp_path, name):
    message = error_of(write(tmp_path, {"name": name}))
    assert "duplicate_rules[0].name" in message and "built-in rule" in message and name in message


def test_a_rule_name_must_be_text(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text('[[duplicate_rules]]\nname = 5\nsource = "cart"\ntable = "t"\nkey = ["k"]\ntime_column = "at"\n')
    assert "duplicate_rules[0].name" in error_of(p)
