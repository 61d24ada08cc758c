"""Notebooks of a tree: what fgirewrite finds in them, and whose bytes a write-back keeps.

    python benchmarks/notebooks.py TREE [--write]

For every ``*.ipynb`` under TREE: whether fgirewrite reads it, how many code cells and
IPython lines it masks, whether putting every cell back unchanged gives the same bytes (it
must), and, when nbformat is importable, whether ``nbformat.writes(nbformat.reads(...))``
keeps its bytes. Then ``fgirewrite --check`` (and with ``--write``, ``fgirewrite --write`` on
a copy, then ``--check`` again) on the notebooks alone. Writes
benchmarks/results/notebooks.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's fgirewrite, not an installed one

from fgirewrite import notebook  # noqa: E402


def _nbformat_keeps(data: bytes) -> bool | None:
    try:
        import nbformat
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = nbformat.writes(nbformat.reads(data.decode("utf-8"), as_version=4))
    return text.encode("utf-8") in (data, data.rstrip(b"\n"))


def _cli(flag: str, paths: list[Path]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "fgirewrite", flag, "--output-format", "json", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    report = json.loads(done.stdout)
    statuses: dict[str, int] = {}
    for finding in report["findings"]:
        statuses[finding["status"]] = statuses.get(finding["status"], 0) + 1
    return {
        "exit_code": done.returncode,
        "findings": statuses,
        "errors": report["errors"],
        "files": report["files"],
        "summary": done.stderr.splitlines()[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree")
    parser.add_argument("--write", action="store_true", help="also --write a copy, verified")
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    rows = []
    books = sorted(tree.rglob("*.ipynb"))
    for path in books:
        data = path.read_bytes()
        row: dict = {"path": str(path.relative_to(tree)), "bytes": len(data)}
        try:
            found = notebook.read(data, str(path))
        except notebook.NotebookError as exc:
            row["error"] = str(exc)
        else:
            row["code_cells"] = len(found.cells)
            row["ipython_lines"] = sum(len(c.masked) for c in found.cells)
            row["round_trip"] = found.render(found.module) == data
        row["nbformat_keeps_bytes"] = _nbformat_keeps(data)
        rows.append(row)
    result: dict = {
        "tree": str(tree),
        "notebooks": len(rows),
        "read": sum("error" not in r for r in rows),
        "round_trip": sum(r.get("round_trip", False) for r in rows),
        "ipython_lines": sum(r.get("ipython_lines", 0) for r in rows),
        "nbformat_keeps_bytes": sum(r["nbformat_keeps_bytes"] is True for r in rows)
        if any(r["nbformat_keeps_bytes"] is not None for r in rows)
        else None,
        "check": _cli("--check", books),
    }
    if args.write:
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / tree.name
            shutil.copytree(tree, copy)
            copies = [copy / p.relative_to(tree) for p in books]
            result["write"] = _cli("--write", copies)
            result["check_after_write"] = _cli("--check", copies)
    result["rows"] = rows
    out = ROOT / "benchmarks" / "results" / "notebooks.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
