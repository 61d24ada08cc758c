"""Sweep fgirewrite over large real trees: it must never crash, never propose a change in a
file without a surrogate Function, and re-emit every unchanged file byte for byte.

    python benchmarks/sweep.py [TREE ...] [--libs DIR] [--jobs N] [--limit N]

Default trees: the installed torch package, this project's tests/ and examples/, and the
spiking libraries (snntorch, norse, spikingjelly, sinabs, rockpool), installed with
``pip install --no-deps --target`` into ``--libs`` (a scratch folder, never site-packages).

For every ``*.py`` file, in worker processes:

- ``--check``'s analysis (``runner.process(analyse_only=True)``) and ``rewrite_source`` run
  without an exception other than a one-line ``SourceError`` (a file that is not Python);
- a file without a surrogate fgirewrite would rewrite gets no new source at all;
- a rewritten file parses, a second run changes nothing, and ``--check`` reports the same
  findings as the rewrite;
- libcst prints back every file ``ast`` parses byte for byte (a mismatch is libcst's, and
  ``rewrite_source`` refuses such a file rather than write it).

Then ``fgirewrite --check`` itself runs on each tree: exit 0, 1 or 2, no traceback, no
internal error. The summary line goes to stdout, details to benchmarks/results/sweep.json
and sweep.md. Exit status 1 if there was a crash or an unexpected change.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's fgirewrite, not an installed one

import libcst as cst  # noqa: E402

from benchmarks.corpus import LIBRARIES as CORPUS  # noqa: E402
from fgirewrite import files, runner  # noqa: E402
from fgirewrite.notebook import python_source  # noqa: E402
from fgirewrite.rewrite import SourceError, rewrite_source  # noqa: E402

# The corpus's versions; these five install with --no-deps and import without extras.
LIBRARIES = {n: CORPUS[n] for n in ("snntorch", "norse", "spikingjelly", "sinabs", "rockpool")}
RESULTS = Path(__file__).parent / "results"


def _findings(findings: list) -> list[tuple[str, str, str]]:
    return [(type(f).__name__, f.name, getattr(f, "code", "")) for f in findings]


def check_file(path: Path) -> dict:
    """Every invariant on one file; the facts the summary needs."""
    record: dict = {"path": str(path), "bytes": 0, "surrogates": 0, "skipped": 0}
    try:
        data = python_source(files.read(path).data, str(path))  # a notebook: its cells
    except (files.FileError, SourceError) as exc:
        record["error"] = str(exc)
        return record
    record["bytes"] = len(data)
    try:
        checked = runner.process(path, analyse_only=True)
        if checked.error and checked.error.startswith(("internal error", "too deeply")):
            record["crash"] = f"--check: {checked.error}"
            return record
        try:
            result = rewrite_source(data, str(path))
        except SourceError as exc:
            record["error"] = str(exc)
            if "\n" in str(exc):
                record["crash"] = f"a SourceError of several lines: {exc!r}"
            return record
        record["surrogates"] = len(result.surrogates)
        record["skipped"] = len(result.skipped)
        if checked.error is None and _findings(checked.findings) != _findings(result.findings):
            record["unexpected"] = "--check and the rewrite report different findings"
        if not result.surrogates and result.new_source is not None:
            record["unexpected"] = "new source proposed for a file without a surrogate"
        if result.new_source is not None:
            ast.parse(result.new_source)
            again = rewrite_source(result.new_source, str(path))
            if again.changed or again.surrogates:
                record["unexpected"] = "a second run changes the rewritten file"
            record["changed"] = result.changed
    except Exception:  # noqa: BLE001 - what the sweep is looking for
        record["crash"] = traceback.format_exc(limit=-4)
        return record
    record.update(_round_trip(data))
    return record


def _round_trip(data: bytes) -> dict:
    """libcst's print of the file, against the file (for what ``ast`` parses)."""
    try:
        ast.parse(data)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {"python": False}
    try:
        module = cst.parse_module(data)
    except (cst.ParserSyntaxError, cst.CSTValidationError, RecursionError) as exc:
        return {"libcst": f"cannot parse: {type(exc).__name__}"}
    return {} if module.bytes == data else {"libcst": "prints the file back differently"}


def install_libraries(target: Path) -> list[Path]:
    """The spiking libraries' packages under ``target`` (installed there if missing)."""
    missing = [n for n in LIBRARIES if not (target / n).is_dir()]
    if missing:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
        command += ["--disable-pip-version-check", "--target", str(target)]
        subprocess.run(command + [f"{n}=={LIBRARIES[n]}" for n in missing], check=True)
    return [target / n for n in LIBRARIES]


def cli_check(tree: Path) -> dict:
    """``fgirewrite --check`` on a whole tree: exit code and what went to stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "fgirewrite", "--check", "-q", "--output-format", "json", str(tree)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    report = json.loads(done.stdout) if done.stdout.startswith("{") else {}
    problems = [e for e in report.get("errors", []) if e["message"].startswith("internal error")]
    if done.returncode not in (0, 1, 2) or "Traceback" in done.stderr or not report:
        problems.append({"path": str(tree), "message": done.stderr[-2000:]})
    return {"exit_code": done.returncode, "files": report.get("files", {}), "crashes": problems}


def sweep(trees: list[Path], jobs: int, limit: int | None = None) -> dict:
    errors: list[tuple[str, str]] = []
    paths = list(files.python_files(trees, errors))[:limit]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        records = list(pool.map(check_file, paths, chunksize=8))
    cli = {str(tree): cli_check(tree) for tree in trees}
    seconds = time.perf_counter() - start
    crashes = [r for r in records if "crash" in r]
    crashes += [
        {"path": c["path"], "crash": c["message"]} for t in cli.values() for c in t["crashes"]
    ]
    unexpected = [r for r in records if "unexpected" in r]
    libcst = Counter(r["libcst"] for r in records if "libcst" in r)
    return {
        "trees": [str(t) for t in trees],
        "files": len(records),
        "megabytes": round(sum(r["bytes"] for r in records) / 1e6, 1),
        "surrogates": sum(r["surrogates"] for r in records),
        "skipped": sum(r["skipped"] for r in records),
        "files_rewritten": sum(bool(r.get("changed")) for r in records),
        "crashes": crashes,
        "unexpected_changes": unexpected,
        "not_python": sum(r.get("python") is False for r in records),
        "source_errors": Counter(r["error"].split(":")[0] for r in records if "error" in r),
        "libcst_round_trip": {
            "files": sum("python" not in r and "error" not in r for r in records),
            "differences": [r["path"] for r in records if "libcst" in r],
            "by_kind": dict(libcst),
        },
        "path_errors": errors,
        "cli_check": cli,
        "seconds": round(seconds, 1),
        "jobs": jobs,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def summary(result: dict) -> str:
    return (
        f"sweep: {result['files']} files, {result['megabytes']} MB, "
        f"{result['surrogates']} surrogates found ({result['skipped']} Function classes "
        f"skipped), crashes: {len(result['crashes'])}, unexpected changes: "
        f"{len(result['unexpected_changes'])}, libcst round-trip differences: "
        f"{len(result['libcst_round_trip']['differences'])}, {result['seconds']} s"
    )


def markdown(result: dict) -> str:
    lines = [
        "# Sweep over real trees",
        "",
        "`python benchmarks/sweep.py` (see its docstring for the invariants).",
        "",
        "```",
        summary(result),
        "```",
        "",
        "| tree | `fgirewrite --check` exit | files checked | would change |",
        "| --- | --- | --- | --- |",
    ]
    for tree, check in result["cli_check"].items():
        files_ = check["files"]
        lines.append(
            f"| {tree} | {check['exit_code']} | {files_.get('checked')} | {files_.get('changed')} |"
        )
    lines += [
        "",
        f"Files that are not Python (`ast` refuses them): {result['not_python']}. "
        f"Source errors by kind: {dict(result['source_errors']) or 'none'}.",
        f"libcst round trip: {result['libcst_round_trip']['files']} files, "
        f"{len(result['libcst_round_trip']['differences'])} differences "
        f"{result['libcst_round_trip']['by_kind'] or ''}.",
        f"{result['jobs']} worker processes, {result['cpus']} CPUs, Python {result['python']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path)
    parser.add_argument("--libs", type=Path, default=Path("/tmp/fgirewrite-sweep-libs"))
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--limit", type=int, help="only the first N files (a quick look)")
    parser.add_argument("--no-save", action="store_true", help="do not write results/")
    args = parser.parse_args()
    trees = args.trees
    if not trees:
        import torch

        trees = [Path(torch.__file__).parent, ROOT / "tests", ROOT / "examples"]
        trees += install_libraries(args.libs)
    result = sweep(trees, args.jobs, args.limit)
    for record in result["crashes"] + result["unexpected_changes"]:
        print(f"{record['path']}: {record.get('crash') or record.get('unexpected')}")
    print(summary(result))
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "sweep.md").write_text(markdown(result))
    sys.exit(1 if result["crashes"] or result["unexpected_changes"] else 0)


if __name__ == "__main__":
    main()
