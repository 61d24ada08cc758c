"""Rewrite the spiking-network libraries on PyPI and report what fgirewrite does with them.

    python benchmarks/corpus.py [--work DIR] [--only snntorch,norse] [--tests]

For each library: install it (``--no-deps``, never touching site-packages) into a scratch
folder, copy its packages, run ``fgirewrite --write`` on the copy (every rewrite verified
before it is written), and count Function classes found, rewritten and verified, and skipped
by reason. With ``--tests``, the library's own test suite (from its sdist, where it ships
one) runs against the original copy and against the rewritten copy. Results go to
benchmarks/results/corpus.json and corpus.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

LIBRARIES = {
    "snntorch": "1.0.0",
    "norse": "1.1.0",
    "spikingjelly": "2.0.0",
    "sinabs": "3.1.3",
    "rockpool": "3.1.0",
    "braincog": "0.2.7.19",
    "spikingtorch": "0.1.3",
    "snntorch-ternary": "0.1.3",
    "lava-dl": "0.6.0",
}
# Test suites shipped in the sdist: the directory inside the sdist, and the pure-python
# packages they import, installed --no-deps into a scratch folder of their own.
SUITES = {
    "norse": ("norse", ["nir==1.0.8", "nirtorch==2.6", "h5py"]),
    "sinabs": ("tests", ["pbr", "nir==1.0.4", "nirtorch==2.6"]),
    "spikingjelly": ("test", ["loguru==0.7.3", "tqdm"]),
}
RESULTS = Path(__file__).parent / "results"


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )


def install(name: str, version: str, work: Path) -> Path | None:
    """The library's files under work/site-NAME, installed without dependencies."""
    site = work / f"site-{name}"
    if not site.exists():
        done = pip(
            "install", "--no-deps", "--no-compile", "--target", str(site), f"{name}=={version}"
        )
        if done.returncode != 0:
            shutil.rmtree(site, ignore_errors=True)
            return None
    return site


def packages(site: Path) -> list[Path]:
    return sorted(
        p
        for p in site.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name != "tests"
    )


def rewrite(name: str, site: Path, work: Path) -> dict:
    """Copy the packages and rewrite the copy; the counts from fgirewrite's JSON."""
    copy = work / f"rewritten-{name}"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    for package in packages(site):
        shutil.copytree(package, copy / package.name)
    for metadata in site.glob("*.dist-info"):  # importlib.metadata (and pbr) read it
        shutil.copytree(metadata, copy / metadata.name)
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fgirewrite",
            "--write",
            "--output-format",
            "json",
            *[p.name for p in packages(copy)],
        ],
        capture_output=True,
        text=True,
        cwd=copy,
    )
    seconds = time.perf_counter() - start
    report = json.loads(done.stdout)
    findings = report["findings"]
    status = Counter(f["status"] for f in findings)
    return {
        "found": len(findings),
        "rewritten_and_verified": status["rewritten"],
        "failed_verification": status["failed"],
        "skipped": dict(Counter(f["code"] for f in findings if f["status"] == "skipped")),
        "crashes": len(report["errors"]),
        "errors": report["errors"],
        "files": report["files"],
        "seconds": round(seconds, 1),
        "details": [
            {k: f.get(k) for k in ("path", "class", "status", "code", "message", "function")}
            for f in findings
        ],
    }


def _outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed / failed / error / skipped, from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    outcomes = {}
    if not junit.exists():
        return outcomes
    for case in ET.parse(junit).getroot().iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = kind
    return outcomes


def _sdist(name: str, version: str, folder: Path) -> Path | None:
    folder.mkdir(exist_ok=True)
    stem = name.replace("-", "_")

    def found() -> list[Path]:
        return [
            a for a in folder.glob(f"*-{version}.tar.gz") if a.name.lower().startswith((stem, name))
        ]

    if not found():
        pip(
            "download", "--no-deps", "--no-binary", ":all:", "-d", str(folder), f"{name}=={version}"
        )
    return next(iter(found()), None)


def run_suite(name: str, version: str, work: Path, given: Path | None = None) -> dict | None:
    """The library's test suite (from its sdist, or a folder given with --suite) against the
    original and the rewritten copy."""
    if name not in SUITES and given is None:
        return None
    folder, deps = SUITES.get(name, ("tests", []))
    tests = work / f"tests-{name}"
    if given is not None and not tests.exists():
        shutil.copytree(given, tests / "suite")
    if not tests.exists():
        archive_path = _sdist(name, version, work / "sdist")
        if archive_path is None:
            return {"result": "no sdist"}
        with tarfile.open(archive_path) as archive:
            root = archive.getnames()[0].split("/")[0]
            members = [
                m
                for m in archive.getmembers()
                if m.name.startswith(f"{root}/{folder}/") and m.isfile()
            ]
            if not members:
                return {"result": "no suite in the sdist"}
            archive.extractall(tests, members=members, filter="data")
        (tests / root / folder).rename(tests / "suite")
    deps_dir = work / f"deps-{name}"
    if not deps_dir.exists():
        pip("install", "--no-deps", "--no-compile", "--target", str(deps_dir), *deps)
    outcomes = {}
    for label, source in (
        ("original", work / f"site-{name}"),
        ("rewritten", work / f"rewritten-{name}"),
    ):
        run_dir = work / f"run-{name}-{label}"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(tests / "suite", run_dir / "suite")
        env = dict(
            os.environ, PYTHONPATH=f"{source}{os.pathsep}{deps_dir}", PYTHONDONTWRITEBYTECODE="1"
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "suite",
                "-p",
                "no:cacheprovider",
                "--continue-on-collection-errors",
                "-W",
                "ignore",
                "--junitxml",
                "junit.xml",
            ],
            capture_output=True,
            text=True,
            cwd=run_dir,
            env=env,
            timeout=3000,
        )
        outcomes[label] = _outcomes(run_dir / "junit.xml")
    before, after = outcomes["original"], outcomes["rewritten"]
    return {label: dict(Counter(found.values())) for label, found in outcomes.items()} | {
        "regressions": sorted(
            t for t, kind in before.items() if kind == "passed" and after.get(t) != "passed"
        ),
        "fixed": sorted(
            t for t, kind in after.items() if kind == "passed" and before.get(t) != "passed"
        ),
    }


def _counts(counts: dict) -> str:
    return (
        ", ".join(
            f"{counts.get(k, 0)} {k}"
            for k in ("passed", "failure", "error", "skipped")
            if counts.get(k)
        )
        or "no tests"
    )


def markdown(rows: dict) -> str:
    lines = [
        "| library | version | Function classes | rewritten + verified | failed verification "
        "| skipped (reason: count) | crashes | test suite: original | test suite: rewritten |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    totals = Counter()
    for name, row in rows.items():
        if "unavailable" in row:
            lines.append(f"| {name} | {row['version']} | {row['unavailable']} | | | | | | |")
            continue
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(row["skipped"].items()))
        suite = row.get("suite") or {}
        if "original" in suite:
            original = _counts(suite["original"])
            regressions = len(suite["regressions"])
            rewritten = f"{_counts(suite['rewritten'])}; {regressions} regressions"
        else:
            original, rewritten = suite.get("result", "no suite in the sdist"), ""
        lines.append(
            f"| {name} | {row['version']} | {row['found']} | {row['rewritten_and_verified']} | "
            f"{row['failed_verification']} | {skipped} | {row['crashes']} | {original} | "
            f"{rewritten} |"
        )
        for key in ("found", "rewritten_and_verified", "failed_verification", "crashes"):
            totals[key] += row[key]
    lines.append(
        f"| **all** | | {totals['found']} | {totals['rewritten_and_verified']} | "
        f"{totals['failed_verification']} | | {totals['crashes']} | | |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fgirewrite-corpus"))
    parser.add_argument("--only", default=",".join(LIBRARIES))
    parser.add_argument("--tests", action="store_true", help="also run the libraries' suites")
    parser.add_argument(
        "--suite",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a test suite for a library whose sdist ships none (a checkout)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows: dict = {}
    for name in args.only.split(","):
        version = LIBRARIES[name]
        print(f"{name} {version}: installing", file=sys.stderr, flush=True)
        site = install(name, version, args.work)
        if site is None:
            rows[name] = {"version": version, "unavailable": "not installable here"}
            continue
        print(f"{name} {version}: rewriting a copy", file=sys.stderr, flush=True)
        rows[name] = {"version": version, **rewrite(name, site, args.work)}
        if args.tests:
            print(f"{name} {version}: running its test suite", file=sys.stderr, flush=True)
            given = dict(item.split("=", 1) for item in args.suite).get(name)
            rows[name]["suite"] = run_suite(
                name, version, args.work, Path(given) if given else None
            )
        row = rows[name]
        print(
            f"{name}: {row['found']} found, {row['rewritten_and_verified']} rewritten and "
            f"verified, {row['failed_verification']} failed verification, skipped "
            f"{row['skipped']}, {row['crashes']} crashes",
            file=sys.stderr,
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    previous = RESULTS / "corpus.json"
    if previous.exists():  # --only updates the libraries it ran and keeps the others
        rows = json.loads(previous.read_text()) | rows
        rows = {name: rows[name] for name in LIBRARIES if name in rows}
    (RESULTS / "corpus.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "corpus.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
