"""Project settings: ``[tool.fgirewrite]`` in ``pyproject.toml``, found as ruff finds its own.

A file's settings come from the closest ``pyproject.toml`` at or above it that has a
``[tool.fgirewrite]`` table; command-line flags override it, and the defaults fill the rest.
``target-version`` defaults to the lower bound of ``requires-python`` in the closest
``pyproject.toml``, with the table or without. Exclusion patterns are globs, matched as ruff
matches them: a pattern without a ``/`` against the name of a file or folder at any depth, one
with a ``/`` against the path from the folder it was written in (the config's folder, or the
current folder for a flag); ``**`` crosses folders, a trailing ``/`` matches folders only.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from fgirewrite.files import SKIP_DIRS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_EXCLUDE = (*sorted(SKIP_DIRS), "*.egg-info")
TARGETS = tuple((3, minor) for minor in range(8, 15))  # py38 .. py314
DEFAULT_TARGET = (3, 8)
FORMATS = ("text", "json")


class ConfigError(Exception):
    """A configuration that cannot be used: one line that names the file and the key."""


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# key: (what it must be, the check). Every other key is an error.
KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "exclude": ("a list of glob strings", _strings),
    "extend-exclude": ("a list of glob strings", _strings),
    "force-exclude": ("true or false", lambda v: isinstance(v, bool)),
    "pythonpath": ("a list of folder paths", _strings),
    "target-version": ('a version such as "py38"', lambda v: isinstance(v, str)),
    "verify": ("true or false", lambda v: isinstance(v, bool)),
    "jobs": ("a whole number, 0 or more", _count),
    "output-format": (" or ".join(f'"{f}"' for f in FORMATS), lambda v: v in FORMATS),
}


@dataclass(frozen=True)
class Pattern:
    """An exclusion glob and where it was written."""

    text: str
    anchor: Path  # the folder a pattern with a ``/`` is relative to
    source: str  # "default", "--exclude", or the config file

    @property
    def dir_only(self) -> bool:
        return self.text.endswith("/")

    @property
    def anchored(self) -> bool:
        return "/" in self.text.rstrip("/")

    @cached_property
    def regex(self) -> str:
        """What the name (or, when anchored, the path from ``anchor``) must match."""
        return _glob(self.text.rstrip("/").lstrip("/"))

    def matches(self, path: Path, is_dir: bool) -> bool:
        """``path`` (absolute and resolved) is what the pattern names."""
        if self.dir_only and not is_dir:
            return False
        if not self.anchored:
            return re.fullmatch(self.regex, path.name) is not None
        try:
            relative = path.relative_to(self.anchor)
        except ValueError:
            return False
        return re.fullmatch(self.regex, relative.as_posix()) is not None

    def __str__(self) -> str:
        return f'"{self.text}" ({self.source})'


def _union(regexes: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{r})" for r in regexes) or "(?!)")


def _glob(pattern: str) -> str:
    """A gitignore-style glob as a regular expression: ``*`` and ``?`` stay within a name,
    ``**`` crosses folders, ``[...]`` is a class (``[!...]`` negated)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : end]
            negate = body[:1] == "!"
            body = re.sub(r"([\\^])", r"\\\1", body[negate:])
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Overrides:
    """Values given on the command line; None where a flag was not given."""

    exclude: tuple[str, ...] | None = None
    extend_exclude: tuple[str, ...] = ()
    force_exclude: bool | None = None
    verify: bool | None = None
    jobs: int | None = None
    output_format: str | None = None


@dataclass(frozen=True)
class Settings:
    """What applies to one file, and where each value came from (``sources``)."""

    config: Path | None  # the pyproject.toml read, if any
    exclude: tuple[Pattern, ...]
    extend_exclude: tuple[Pattern, ...]
    force_exclude: bool
    pythonpath: tuple[Path, ...]  # import roots added for verification, absolute
    target_version: tuple[int, int]  # the oldest Python the rewritten code must run on
    verify: bool
    jobs: int
    output_format: str
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> "default", a flag, a file

    @property
    def root(self) -> Path | None:
        """The folder of the config file: excluded paths are looked for up to it."""
        return None if self.config is None else self.config.parent

    def excluded_by(self, path: Path, is_dir: bool) -> Pattern | None:
        """The pattern that excludes ``path`` (absolute, resolved), or None."""
        names, folders, anchored = self._matchers
        hit = names.fullmatch(path.name) or (is_dir and folders.fullmatch(path.name))
        if not hit and not any(p.matches(path, is_dir) for p in anchored):
            return None
        return next(p for p in self.exclude + self.extend_exclude if p.matches(path, is_dir))

    @cached_property
    def _matchers(self) -> tuple[re.Pattern[str], re.Pattern[str], tuple[Pattern, ...]]:
        """One regular expression for the name patterns (one for those of folders only): a
        walk asks every file, so the common case is one match."""
        patterns = self.exclude + self.extend_exclude
        names = [p.regex for p in patterns if not p.anchored and not p.dir_only]
        folders = [p.regex for p in patterns if not p.anchored and p.dir_only]
        anchored = tuple(p for p in patterns if p.anchored)
        return _union(names), _union(folders), anchored

    def values(self) -> dict[str, object]:
        """Every setting by its key in the config file, as TOML values."""
        return {
            "exclude": [p.text for p in self.exclude],
            "extend-exclude": [p.text for p in self.extend_exclude],
            "force-exclude": self.force_exclude,
            "pythonpath": [str(p) for p in self.pythonpath],
            "target-version": "py{}{}".format(*self.target_version),
            "verify": self.verify,
            "jobs": self.jobs,
            "output-format": self.output_format,
        }


@dataclass(frozen=True)
class _Config:
    """One pyproject.toml: its ``[tool.fgirewrite]`` table (None without one) and
    ``requires-python``."""

    path: Path
    table: Mapping[str, Any] | None
    requires_python: str | None


@lru_cache(maxsize=256)
def _read(path: Path, stamp: tuple[int, int]) -> _Config:
    """A pyproject.toml, read once per content (``stamp``: its mtime and size)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: error: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: error: cannot read: {exc.strerror or exc}") from None
    tool = data.get("tool")
    table = tool.get("fgirewrite") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: error: [tool.fgirewrite]: expected a table")
    project = data.get("project")
    requires = project.get("requires-python") if isinstance(project, dict) else None
    if table is not None:
        _check(path, table)
    return _Config(path, table, requires if isinstance(requires, str) else None)


def _check(path: Path, table: Mapping[str, Any]) -> None:
    for name, value in table.items():
        if name not in KEYS:
            near = get_close_matches(name, KEYS, n=1, cutoff=0.6)
            hint = f' (did you mean "{near[0]}"?)' if near else ""
            raise ConfigError(f'{path}: error: [tool.fgirewrite] unknown key "{name}"{hint}')
        what, valid = KEYS[name]
        if not valid(value):
            raise ConfigError(
                f"{path}: error: [tool.fgirewrite] {name}: expected {what}, got {value!r}"
            )
        if name in ("exclude", "extend-exclude"):
            for pattern in value:
                if pattern.startswith("!"):
                    raise ConfigError(
                        f"{path}: error: [tool.fgirewrite] {name}: {pattern!r}: negated "
                        "patterns (!) are not supported"
                    )
        if name == "target-version":
            _target(value, f"{path}: error: [tool.fgirewrite] target-version")
        if name == "pythonpath":
            for entry in value:
                if not (path.parent / entry).is_dir():
                    raise ConfigError(
                        f"{path}: error: [tool.fgirewrite] pythonpath: no folder {entry!r} "
                        f"in {path.parent}"
                    )


def _target(value: str, where: str) -> tuple[int, int]:
    match = re.fullmatch(r"py3(\d+)", value)
    version = (3, int(match.group(1))) if match else None
    if version is None or version not in TARGETS:
        raise ConfigError(f'{where}: expected "py38" to "py314", got {value!r}')
    return version


def minimum_python(requires: str) -> tuple[int, int] | None:
    """The oldest Python a ``requires-python`` specifier admits (its greatest lower bound),
    or None when it states none that fgirewrite can read."""
    found = []
    for clause in requires.split(","):
        match = re.fullmatch(r"\s*(>=|~=|==|>)\s*(\d+)\.(\d+)(?:\.[\d*]+)*\s*", clause)
        if match:
            found.append((int(match.group(2)), int(match.group(3))))
    return max(found) if found else None


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


class Resolver:
    """Settings for the files of one run: the closest config of each folder, with the
    command line's ``overrides`` on top. Each folder is looked up once."""

    def __init__(self, overrides: Overrides | None = None, cwd: Path | None = None):
        self.overrides = overrides or Overrides()
        for flag, globs in (
            ("--exclude", self.overrides.exclude or ()),
            ("--extend-exclude", self.overrides.extend_exclude),
        ):
            for glob in globs:
                if glob.startswith("!"):
                    raise ConfigError(
                        f"fgirewrite: error: {flag} {glob!r}: negated patterns (!) are not "
                        "supported"
                    )
        self.cwd = (cwd or Path.cwd()).resolve()
        self._configs: dict[Path, tuple[_Config | None, _Config | None]] = {}
        self._made: dict[tuple[Path | None, Path | None], Settings] = {}
        self._folders: dict[Path, Settings] = {}

    def settings(self, path: Path) -> Settings:
        """The settings that apply to ``path`` (a file, or a folder and what it holds)."""
        path = _resolved(path)
        return self.at(path if path.is_dir() else path.parent)

    def at(self, folder: Path) -> Settings:
        """The settings of a resolved folder's files."""
        found = self._folders.get(folder)
        if found is None:
            config, nearest = self._closest(folder)
            key = (config.path if config else None, nearest.path if nearest else None)
            if key not in self._made:
                self._made[key] = self._make(config, nearest)
            found = self._folders[folder] = self._made[key]
        return found

    def excluded(self, path: Path, is_dir: bool) -> Pattern | None:
        """The pattern that excludes a path met while walking (absolute, resolved), judged
        by the settings of its folder."""
        return self.at(path.parent).excluded_by(path, is_dir)

    def excluded_explicitly(self, path: Path) -> Pattern | None:
        """The pattern that excludes a path given on the command line, or one of the folders
        it is in below its config's folder (the current folder without one), as ruff does
        with ``--force-exclude``."""
        path = _resolved(path)
        top = self.settings(path).root or self.cwd
        for candidate in [path, *path.parents]:
            if candidate == top or candidate.parent == candidate:
                break
            found = self.excluded(candidate, candidate.is_dir())
            if found is not None or top not in candidate.parents:
                return found
        return None

    def _closest(self, folder: Path) -> tuple[_Config | None, _Config | None]:
        """The closest config with a ``[tool.fgirewrite]`` table at or above ``folder``, and
        the closest pyproject.toml at all (for ``requires-python``)."""
        if folder in self._configs:
            return self._configs[folder]
        candidate = folder / "pyproject.toml"
        stamp = _stamp(candidate)
        here = _read(candidate, stamp) if stamp is not None else None
        found: tuple[_Config | None, _Config | None]
        if here is not None and here.table is not None:
            found = (here, here)
        elif folder.parent == folder:
            found = (None, here)
        else:
            above, nearest = self._closest(folder.parent)
            found = (above, here or nearest)
        self._configs[folder] = found
        return found

    def _make(self, config: _Config | None, nearest: _Config | None) -> Settings:
        given = self.overrides
        table: Mapping[str, Any] = {}
        where, anchor = "default", self.cwd
        if config is not None and config.table is not None:
            table, where, anchor = config.table, str(config.path), config.path.parent
        sources: dict[str, str] = {}

        def pick(name: str, flag: str, value: Any, default: Any) -> Any:
            if value is not None:
                sources[name] = flag
                return value
            sources[name] = where if name in table else "default"
            return table.get(name, default)

        if given.exclude is not None:
            exclude = _patterns(given.exclude, self.cwd, "--exclude")
            sources["exclude"] = "--exclude"
        else:
            texts = pick("exclude", "", None, DEFAULT_EXCLUDE)
            exclude = _patterns(texts, anchor, sources["exclude"])
        extend = _patterns(table.get("extend-exclude", ()), anchor, where)
        extend += _patterns(given.extend_exclude, self.cwd, "--extend-exclude")
        sources["extend-exclude"] = ", ".join(dict.fromkeys(p.source for p in extend)) or "default"
        pythonpath = tuple((anchor / p).resolve() for p in pick("pythonpath", "", None, ()))
        target, sources["target-version"] = _target_of(table, where, nearest)
        verify_flag = "--verify" if given.verify else "--no-verify"
        return Settings(
            config=config.path if config is not None else None,
            exclude=exclude,
            extend_exclude=extend,
            force_exclude=pick("force-exclude", "--force-exclude", given.force_exclude, False),
            pythonpath=pythonpath,
            target_version=target,
            verify=pick("verify", verify_flag, given.verify, True),
            jobs=pick("jobs", "--jobs", given.jobs, 0),
            output_format=pick("output-format", "--output-format", given.output_format, "text"),
            sources=sources,
        )


def _resolved(path: Path) -> Path:
    """The path resolved; a link loop, which cannot be, made absolute (the walk reports it)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(path).absolute()


def _patterns(texts: Iterable[str], anchor: Path, source: str) -> tuple[Pattern, ...]:
    return tuple(Pattern(text, anchor, source) for text in texts)


def _target_of(
    table: Mapping[str, Any], where: str, nearest: _Config | None
) -> tuple[tuple[int, int], str]:
    """``target-version``, else the lower bound of the closest ``requires-python`` (at
    least 3.8: torch 2.1, the oldest torch fgirewrite supports, needs it), else 3.8."""
    if "target-version" in table:
        return _target(table["target-version"], where), where
    if nearest is not None and nearest.requires_python is not None:
        found = minimum_python(nearest.requires_python)
        if found is not None:
            return max(found, DEFAULT_TARGET), (
                f'requires-python "{nearest.requires_python}" in {nearest.path}'
            )
    return DEFAULT_TARGET, "default"


def settings_for(path: Path, overrides: Overrides | None = None) -> Settings:
    """The settings that apply to ``path``: its closest ``[tool.fgirewrite]``, under
    ``overrides``; ``ConfigError`` (one line naming the file and key) for a bad config."""
    return Resolver(overrides).settings(Path(path))


def show(path: Path, settings: Settings, excluded: Pattern | None) -> str:
    """``--show-settings``: what applies to ``path``, as TOML, each value with its source."""
    import json

    origin = f"from {settings.config}" if settings.config else "no [tool.fgirewrite] found"
    lines = [f"# {path}: settings {origin}"]
    for name, value in settings.values().items():
        lines.append(f"{name} = {json.dumps(value)}  # {settings.sources[name]}")
    if excluded is not None:
        given = "" if settings.force_exclude else "; given by name, it is read (no force-exclude)"
        lines.append(f"# {path} is excluded by {excluded}{given}")
    return "\n".join(lines)
