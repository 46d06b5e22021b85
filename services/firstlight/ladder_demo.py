"""`make demo-ladder`: start a local stack in a temporary directory, run the ladder on 700
bundled animal-mnist images (5 animals × 140), stop the stack. Reports go to ladder-report/."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from rich.console import Console

from firstlight import datasets
from firstlight.ladder import DEFAULT_CLASSES, run_ladder
from firstlight.sdk import Firstlight
from firstlight.stack import LocalStack


def main() -> int:
    console = Console()
    items = datasets.animal_mnist(140, seed=0, classes=DEFAULT_CLASSES)
    with tempfile.TemporaryDirectory() as tmp:
        console.print("starting a local stack…")
        with LocalStack(Path(tmp)) as stack, Firstlight.from_addresses(stack.addresses) as client:
            run_ladder(client, items, Path("ladder-report"), console, counts=(500, 100, 100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
