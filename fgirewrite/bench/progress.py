"""A progress bar on stderr: redrawn in place on a terminal, one line per unit otherwise."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Progress:
    """Counts units of work; ``unit(label)`` shows the label while the unit runs."""

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()

    def _line(self, label: str) -> str:
        width = 24
        filled = width * self.done // self.total
        elapsed = int(time.monotonic() - self.start)
        return (
            f"fgirewrite bench [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {elapsed // 60}m{elapsed % 60:02d}s  {label}"
        )

    def show(self, label: str) -> None:
        if not self.enabled:
            return
        line = self._line(label)
        if self.tty:
            columns = shutil.get_terminal_size((100, 20)).columns
            self.stream.write("\r" + line[: columns - 1].ljust(columns - 1))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    @contextlib.contextmanager
    def unit(self, label: str) -> Iterator[None]:
        self.show(label)
        try:
            yield
        finally:
            self.done += 1

    def close(self) -> None:
        if self.enabled and self.tty:
            columns = shutil.get_terminal_size((100, 20)).columns
            self.stream.write("\r" + " " * (columns - 1) + "\r")
            self.stream.flush()
