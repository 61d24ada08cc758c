"""Time `fgirewrite --check` over a large real tree (the installed torch package by default).

    python benchmarks/check_speed.py [TREE] [--jobs N] [--cpus N] [--repeat N]

Each run is a fresh process (start-up and imports included), pinned to ``--cpus`` CPUs (2 by
default, the project's machine). Prints files, MB, seconds, findings by status and reason,
and errors (there should be none: --check must never crash on a file), and for scale the
time to read every file's bytes in this process. Writes benchmarks/results/check_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", nargs="?", help="default: the installed torch package")
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs each run may use")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[: args.cpus]
    if args.tree is None:
        import torch

        args.tree = os.path.dirname(torch.__file__)
    tree = Path(args.tree)
    sources = [p for p in tree.rglob("*.py") if p.is_file()]
    megabytes = sum(p.stat().st_size for p in sources) / 1e6
    start = time.perf_counter()
    datas = [source.read_bytes() for source in sources]
    read_seconds = time.perf_counter() - start
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's
    from fgirewrite.discover import may_define_function

    candidates = sum(map(may_define_function, datas))
    command = [
        sys.executable,
        "-m",
        "fgirewrite",
        "--check",
        "--output-format",
        "json",
        "--jobs",
        str(args.jobs),
        str(tree),
    ]
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
            cwd=Path(__file__).resolve().parent.parent,  # this checkout's fgirewrite
        )
        times.append(time.perf_counter() - start)
    report = json.loads(done.stdout)
    statuses = Counter(f["status"] for f in report["findings"])
    reasons = Counter(f["code"] for f in report["findings"] if f["status"] == "skipped")
    result = {
        "tree": str(tree),
        "files": report["files"]["checked"],
        "megabytes": round(megabytes, 1),
        "seconds_best": round(min(times), 2),
        "seconds_all": [round(t, 2) for t in times],
        "read_seconds": round(read_seconds, 2),
        "parsed": candidates,  # files the byte scan lets through to the parser
        "exit_code": done.returncode,
        "errors": report["errors"],
        "findings": dict(statuses),
        "skipped_by_reason": dict(reasons.most_common()),
        "cpus": len(cpus),
        "machine_cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "check_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
