"""What rewriting one file found and produced: no libcst here, so that the main process of
``--check`` and everything that only reads results never imports it."""

from __future__ import annotations

from dataclasses import dataclass, field

from fgirewrite.surrogate import Location, Skip, Surrogate, key


@dataclass
class Rewrite:
    """What fgirewrite found in one source, and the rewritten source if anything changed."""

    path: str
    source: bytes
    findings: list[Surrogate | Skip] = field(default_factory=list)
    new_source: bytes | None = None
    names: dict[str, str] = field(default_factory=dict)  # key(surrogate) -> generated function
    helpers: dict[str, str] = field(default_factory=dict)  # runtime helper -> its name here
    # ``# fgirewrite: skip``: (qualname, occurrence) of each class left alone, nothing in it
    # edited; and the comments that leave no Function class alone
    left_alone: frozenset[tuple[str, int]] = frozenset()
    unused_skips: list[Location] = field(default_factory=list)

    @property
    def surrogates(self) -> list[Surrogate]:
        return [f for f in self.findings if isinstance(f, Surrogate)]

    @property
    def skipped(self) -> list[Skip]:
        return [f for f in self.findings if isinstance(f, Skip)]

    @property
    def changed(self) -> bool:
        return self.new_source is not None and self.new_source != self.source

    def function(self, finding: Surrogate | Skip) -> str | None:
        """The name of the FGI function written for a surrogate."""
        return self.names.get(key(finding))
