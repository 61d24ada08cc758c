"""Import roots and entries resolved as the user's project resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgirewrite.project import (
    Entry,
    EntryError,
    entry_file,
    import_roots,
    package_of,
    parse_entry,
    project_root,
)


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def test_a_script_folder_without_init_reaches_its_siblings_and_the_root(tmp_path):
    _tree(tmp_path, ["pyproject.toml", "Net/models/resnet.py", "Net/module/LIF.py"])
    roots = import_roots(tmp_path / "Net/models/resnet.py")
    assert roots == [tmp_path / "Net/models", tmp_path / "Net", tmp_path]


def test_a_package_starts_at_the_folder_that_holds_it_and_a_src_layout_is_added(tmp_path):
    _tree(tmp_path, [".git/HEAD", "src/lib/__init__.py", "src/lib/layers.py", "tools/x.py"])
    assert package_of(tmp_path / "src/lib/layers.py") == ("lib.layers", tmp_path / "src")
    assert import_roots(tmp_path / "src/lib/layers.py") == [tmp_path / "src", tmp_path]
    assert import_roots(tmp_path / "tools/x.py") == [tmp_path / "tools", tmp_path, tmp_path / "src"]


def test_without_a_project_marker_only_the_package_root(tmp_path):
    _tree(tmp_path, ["a/b/c.py"])
    assert project_root(tmp_path / "a/b/c.py") in (None, *tmp_path.parents)
    if project_root(tmp_path / "a/b/c.py") is None:
        assert import_roots(tmp_path / "a/b/c.py") == [tmp_path / "a/b"]


def test_extra_roots_come_last_once(tmp_path):
    _tree(tmp_path, ["setup.cfg", "m.py", "vendor/x.py"])
    roots = import_roots(tmp_path / "m.py", extra=[tmp_path / "vendor", tmp_path])
    assert roots == [tmp_path, tmp_path / "vendor"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("models/net.py:build", Entry("build", path=Path("models/net.py"))),
        ("models.net:build", Entry("build", module="models.net")),
        ("build", Entry("build", path=Path("m.py"))),
    ],
)
def test_entries(spec, expected):
    assert parse_entry(spec, Path("m.py")) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("build", "entry `build`: expected FILE:FUNCTION or MODULE:FUNCTION"),
        ("a.b:1x", "entry `a.b:1x`: `1x` is not a function name"),
        ("a b:f", "entry `a b:f`: `a b` is neither a file nor a dotted module name"),
    ],
)
def test_bad_entries_say_why(spec, message):
    with pytest.raises(EntryError) as info:
        parse_entry(spec)
    assert str(info.value) == message


def test_a_module_entry_is_found_in_the_roots_or_the_error_names_them(tmp_path):
    _tree(tmp_path, ["Net/models/__init__.py", "Net/models/net.py", "Net/module/LIF.py"])
    roots = [tmp_path / "Net"]
    assert entry_file(parse_entry("models.net:build"), roots) == tmp_path / "Net/models/net.py"
    assert entry_file(parse_entry("models:build"), roots) == tmp_path / "Net/models/__init__.py"
    with pytest.raises(EntryError) as info:
        entry_file(parse_entry("nets.x:build"), roots)
    assert str(info.value) == (
        f"entry `nets.x:build`: no module `nets.x` in the import roots ({tmp_path / 'Net'}); "
        "add its folder to `pythonpath` under [tool.fgirewrite] in pyproject.toml"
    )
