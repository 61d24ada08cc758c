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
import re
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
# Test suites shipped in the sdist: (directory inside the sdist, pytest arguments).
SUITES = {
    "norse": ("norse", ["-p", "no:cacheprovider"]),
    "sinabs": ("tests", ["-p", "no:cacheprovider"]),
    "spikingjelly": ("test", ["-p", "no:cacheprovider"]),
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


def _summary(output: str) -> dict:
    """pytest's closing line as counts."""
    line = next((s for s in reversed(output.splitlines()) if " in " in s and "=" in s), "")
    counts = {
        k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed)", line)
    }
    return {"line": line.strip("= "), **counts}


def run_suite(name: str, version: str, work: Path) -> dict | None:
    """The sdist's test suite against the original and the rewritten copy."""
    if name not in SUITES:
        return None
    folder, extra = SUITES[name]
    sdist_dir = work / "sdist"
    sdist_dir.mkdir(exist_ok=True)
    archives = list(sdist_dir.glob(f"{name.replace('-', '_')}-{version}.tar.gz")) + list(
        sdist_dir.glob(f"{name}-{version}.tar.gz")
    )
    if not archives:
        pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(sdist_dir),
            f"{name}=={version}",
        )
        archives = list(sdist_dir.glob(f"*{version}.tar.gz"))
        archives = [
            a
            for a in archives
            if a.name.lower().startswith(name.replace("-", "_")) or a.name.lower().startswith(name)
        ]
    if not archives:
        return {"result": "no sdist"}
    tests = work / f"tests-{name}"
    if not tests.exists():
        with tarfile.open(archives[0]) as archive:
            root = archive.getnames()[0].split("/")[0]
            members = [
                m
                for m in archive.getmembers()
                if m.name.startswith(f"{root}/{folder}/") and m.isfile()
            ]
            archive.extractall(tests, members=members, filter="data")
        (tests / root / folder).rename(tests / "suite")
    results = {}
    for label, source in (
        ("original", work / f"site-{name}"),
        ("rewritten", work / f"rewritten-{name}"),
    ):
        run_dir = work / f"run-{name}-{label}"
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(tests / "suite", run_dir / "suite")
        env = dict(os.environ, PYTHONPATH=str(source), PYTHONDONTWRITEBYTECODE="1")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "suite", *extra],
            capture_output=True,
            text=True,
            cwd=run_dir,
            env=env,
            timeout=3000,
        )
        results[label] = _summary(done.stdout + done.stderr)
    return results


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
        original = suite.get("original", {}).get("line", suite.get("result", "not shipped"))
        rewritten = suite.get("rewritten", {}).get("line", "")
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
            rows[name]["suite"] = run_suite(name, version, args.work)
        row = rows[name]
        print(
            f"{name}: {row['found']} found, {row['rewritten_and_verified']} rewritten and "
            f"verified, {row['failed_verification']} failed verification, skipped "
            f"{row['skipped']}, {row['crashes']} crashes",
            file=sys.stderr,
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "corpus.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "corpus.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
