"""The shared rich console (stdout) that training and its messages print through."""
from __future__ import annotations

from rich.console import Console

console = Console(stderr=False, highlight=False)


def show(renderable) -> None:
    """Print a rich renderable or a message."""
    console.print(renderable)
