"""The one exception type for bad user input: the CLI prints its message and exits non-zero."""
from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix. The message names the file, field or key and what to do.

    `problems` holds every problem found when several are reported together.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


def shown(problems: list[str], limit: int) -> list[str]:
    """The first `limit` problems, then one line `... and N more` for the rest: a long list stays readable."""
    return list(problems[:limit]) + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])


def few(ids, limit: int = 5) -> str:
    """The first `limit` ids on one line, comma-separated, then "and N more": what an error message names
    (`shown` is the same cut for a list of problem lines)."""
    ids = [str(i) for i in ids]
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
