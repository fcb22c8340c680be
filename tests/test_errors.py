"""The user-error helpers: long problem lists are cut with a count of the rest."""
from maskds.core.errors import UserError, shown


def test_shown_keeps_a_short_list_and_counts_the_rest_of_a_long_one():
    assert shown(["a", "b"], 2) == ["a", "b"]
    assert shown([], 3) == []
    assert shown(["a", "b", "c", "d"], 2) == ["a", "b", "... and 2 more"]


def test_a_user_error_lists_its_problems_under_the_message():
    err = UserError("bad input:", shown(["x", "y", "z"], 1))
    assert str(err) == "bad input:\n  - x\n  - ... and 2 more" and err.problems == ["x", "... and 2 more"]
