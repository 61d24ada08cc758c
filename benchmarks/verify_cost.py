"""What verification adds to ``fgirewrite --write``: the bundled examples and the spiking libraries.

    python benchmarks/verify_cost.py [--repeat N]

For each tree, a fresh copy is written with ``--write --no-verify`` and another with ``--write``
(every rewrite verified through the module as written), each in a fresh process, alternating,
``--repeat`` times; the medians and their difference are reported, with how many surrogates
were rewritten. Writes benchmarks/results/verify_cost.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LIBRARIES = ("snntorch", "norse", "spikingjelly")


def trees() -> dict[str, Path]:
    found = {"examples": ROOT / "examples"}
    for name in LIBRARIES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found[name] = Path(next(iter(spec.submodule_search_locations)))
    return found


def run(tree: Path, verify: bool) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / tree.name
        shutil.copytree(tree, copy, ignore=shutil.ignore_patterns("__pycache__"))
        command = [sys.executable, "-m", "fgirewrite", "--write", "--quiet", str(copy)]
        if not verify:
            command.insert(4, "--no-verify")
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
        seconds = time.perf_counter() - start
        summary = (done.stderr.strip().splitlines() or [""])[-1]
        return seconds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for label, tree in trees().items():
        times: dict[bool, list[float]] = {False: [], True: []}
        summaries: dict[bool, str] = {}
        for _ in range(args.repeat):
            for verify in (False, True):
                seconds, summaries[verify] = run(tree, verify)
                times[verify].append(seconds)
        plain, checked = statistics.median(times[False]), statistics.median(times[True])
        rewritten = re.search(r"rewrote (\d+) surrogate", summaries[True])
        rows.append(
            {
                "tree": label,
                "no_verify_s": round(plain, 2),
                "verify_s": round(checked, 2),
                "added_s": round(checked - plain, 2),
                "rewritten": int(rewritten.group(1)) if rewritten else 0,
                "summary": summaries[True],
            }
        )
        print(f"{label}: {plain:.2f} s -> {checked:.2f} s (+{checked - plain:.2f} s)", flush=True)
    info = {
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "repeat": args.repeat,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verify_cost.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [
        "# What verification adds to `fgirewrite --write`",
        "",
        f"`python benchmarks/verify_cost.py --repeat {args.repeat}`: medians, fresh processes, "
        f"{info['cpus']} CPUs, Python {info['python']}.",
        "",
        "| tree | surrogates rewritten | --write --no-verify | --write | added by verification |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['tree']} | {r['rewritten']} | {r['no_verify_s']:.2f} s | {r['verify_s']:.2f} s "
        f"| {r['added_s']:+.2f} s |"
        for r in rows
    ]
    (RESULTS / "verify_cost.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
