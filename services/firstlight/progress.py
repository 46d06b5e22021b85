"""The progress bar the CLI, the demo and the ladder show (rich): a label, the bar, done/total,
a free-form rate text, elapsed and remaining time. Kept apart from the CLI so the demo and the
ladder, which the CLI runs, need not import the CLI back."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(console: Console) -> Progress:
    """Add tasks with ``add_task(description, total=..., rate="")``; ``rate`` is shown as given."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
