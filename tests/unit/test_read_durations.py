"""``--since`` durations are capped: a huge one is a usage sentence, not an overflow."""
import datetime as dt

import pytest

from app.cli.cmd_read import MAX_SINCE_DAYS, parse_duration
from app.errors import EXIT_USAGE, UsageError


@pytest.mark.parametrize("text", ["99999999999d", "100000000w", "3651d", "521.5w", "87601h",
                                  "9" * 400 + "s", "1" * 30 + "m"])
def test_durations_beyond_the_cap_are_one_usage_sentence(text):
    with pytest.raises(UsageError) as err:
        parse_duration(text)
    assert err.value.exit_code == EXIT_USAGE
    assert f"at most {MAX_SINCE_DAYS} days" in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize("text,days", [("3650d", 3650), ("521w", 3647), ("87600h", 3650)])
def test_durations_up_to_the_cap_are_accepted(text, days):
    assert parse_duration(text) == dt.timedelta(days=days)
