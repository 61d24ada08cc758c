"""The FGI paper's benchmark protocol on one GPU, inside a time budget.

T in 28, 49, 98, 196, 392, 784 (n_in = 784 / T); eager, TorchScript and torch.compile, each
with the original (custom autograd.Function) and the FGI rewrite; batch 128; 128 neurons;
matmul precision 'high'; CUDA-event timing. Writes bench.json, bench.md and bench.png under
``OUT_ROOT/gpu-<device>/`` (device name and torch version are in bench.json)::

    python benchmarks/gpu_paper.py                        # on a GPU: benchmarks/results/gpu-*/
    python benchmarks/gpu_paper.py --out-root "$OUT"      # on a lent machine (results README)
    python benchmarks/gpu_paper.py --dry-run              # the plan; nothing runs
    python benchmarks/gpu_paper.py --cpu-smoke --out-root /tmp/x   # every step on CPU, tiny

(A script path, not ``python -m benchmarks...``: opacus installs a top-level ``benchmarks``
package that shadows this folder.)

Each step is one ``fgirewrite bench`` process, killed at its deadline if it runs over (what
the other steps measured is kept): eager and TorchScript at every length first (cheap), then
torch.compile one length at a time, shortest first, while the estimate for the next length
(the last compile step's wall time scaled by the length ratio: the unrolled graph grows with
T) fits in the time left; then the cold/warm compile-cost experiment at the shortest length if
time still allows. The steps' documents are merged into one; a cell that was not run is
``skipped`` with the reason. Per cell: 3 rounds x 0.1 s (at long T the 3 blocks per round
that every cell gets take longer than that), 5 warm-up calls.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's fgirewrite, not an installed one

from fgirewrite.bench import command, expected, report, schema  # noqa: E402
from fgirewrite.bench.config import MEASURES, PAPER_LENGTHS, VARIANTS, BenchConfig  # noqa: E402

MODEL = ROOT / "examples" / "alif.py"
MODES = ("eager", "script", "compile")
BUDGET_S = 500.0
"""Default: inside one 10-minute command on a lent machine, with room for start-up."""
RESERVE_S = 20.0
"""Kept back from the budget for merging and writing the reports."""
MIN_STEP_S = 15.0
"""A step is not started with less than this left: a fresh process alone costs seconds."""
GPU_TIMING = ("--rounds", "3", "--min-time", "0.1", "--warmup", "5")


@dataclass(frozen=True)
class Step:
    """One ``fgirewrite bench`` process (or the compile-cost experiment)."""

    kind: str  # "eager-script", "compile" or "compile-cache"
    lengths: tuple[int, ...]

    @property
    def modes(self) -> tuple[str, ...]:
        return ("eager", "script") if self.kind == "eager-script" else ("compile",)

    @property
    def name(self) -> str:
        what = {"eager-script": "eager + script", "compile": "compile"}.get(self.kind, self.kind)
        return f"{what}, T={','.join(map(str, self.lengths))}"


@dataclass
class Plan:
    """What to run, and how."""

    lengths: tuple[int, ...]
    steps: list[Step]
    preset: list[str]  # fgirewrite bench options shared by every step
    device: str
    compile_mode: str | None  # None: the preset's
    budget_s: float
    model: Path
    compile_cache: bool


@dataclass
class Record:
    """What one step did."""

    step: Step
    status: str  # ok, failed, timed-out, skipped
    wall_s: float = 0.0
    command: str = ""
    error: str | None = None
    doc: dict | None = field(default=None, repr=False)

    def as_json(self) -> dict:
        return {
            "step": self.step.name,
            "status": self.status,
            "wall_s": round(self.wall_s, 1),
            "command": self.command,
            "error": self.error,
        }


def make_plan(args: argparse.Namespace) -> Plan:
    """The steps for the GPU protocol, or for the CPU smoke run (tiny sizes, same steps)."""
    if args.cpu_smoke:
        lengths, device, compile_mode = args.lengths or (2, 8), "cpu", None
        preset = ["--smoke"]
    else:
        lengths, device, compile_mode = args.lengths or PAPER_LENGTHS, "cuda", args.compile_mode
        preset = ["--paper", *GPU_TIMING, "--compile-mode", compile_mode]
    split = [n for n in lengths if n <= max(lengths) / 4] or list(lengths)
    rest = [n for n in lengths if n not in split]
    steps = [Step("eager-script", tuple(split))]
    steps += [Step("eager-script", tuple(rest))] if rest else []
    steps += [Step("compile", (n,)) for n in lengths]
    if args.compile_cache:
        steps.append(Step("compile-cache", (lengths[0],)))
    return Plan(
        tuple(lengths),
        steps,
        [*preset, "--device", device],
        device,
        compile_mode,
        args.budget,
        args.model,
        args.compile_cache,
    )


def bench_command(plan: Plan, step: Step, out: Path) -> list[str]:
    """The ``fgirewrite bench`` command line of one step."""
    lengths = ",".join(map(str, step.lengths))
    return [
        sys.executable,
        "-m",
        "fgirewrite",
        "bench",
        str(plan.model),
        *plan.preset,
        "--lengths",
        lengths,
        "--modes",
        ",".join(step.modes),
        "--no-compile-cache",
        "--quiet",
        "--json",
        "--out",
        str(out),
    ]


def estimate(step: Step, records: list[Record]) -> float | None:
    """Seconds the step will likely take, from the steps done so far; None when unknown."""
    compiled = [r for r in records if r.step.kind == "compile" and r.status == "ok"]
    if not compiled:
        return None
    last = compiled[-1]
    if step.kind == "compile":
        return last.wall_s * step.lengths[0] / last.step.lengths[0]
    if step.kind == "compile-cache":  # 4 fresh processes, each compiling one variant
        return 2 * compiled[0].wall_s * step.lengths[0] / compiled[0].step.lengths[0]
    return None


def why_not(step: Step, records: list[Record], left: float) -> str | None:
    """Why the step is skipped with ``left`` seconds to go; None to run it."""
    if step.kind == "compile" and any(
        r.step.kind == "compile" and r.status in ("timed-out", "skipped") for r in records
    ):
        return "a shorter length's compile did not finish within the time budget"
    if step.kind == "compile-cache" and estimate(step, records) is None:
        return "no compile step finished, so none would within the budget"
    if left < MIN_STEP_S:
        return f"time budget spent ({left:.0f} s left)"
    guess = estimate(step, records)
    if guess is not None and guess > left:
        return f"estimated {guess:.0f} s, {left:.0f} s left in the time budget"
    return None


def _environ() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(command: list[str], timeout: float) -> tuple[int | None, str]:
    """Exit code and stderr of ``command``; None when it ran past ``timeout`` and was killed
    with everything it started (inductor's compile workers too)."""
    child = subprocess.Popen(
        command,
        env=_environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return None, ""
    return child.returncode, err


def run_bench(plan: Plan, step: Step, timeout: float) -> Record:
    """Run one step as a fresh ``fgirewrite bench`` process, at most ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix="gpu-paper-") as tmp:
        command = bench_command(plan, step, Path(tmp) / "out")
        record = Record(step, "ok", command=shlex.join(["python", *command[1:]]))
        start = time.monotonic()
        returncode, output = _run(command, timeout)
        record.wall_s = time.monotonic() - start
        saved = Path(tmp) / "out" / "bench.json"
        if returncode is None:
            record.status, record.error = "timed-out", f"killed after {timeout:.0f} s"
        elif returncode in (0, 1) and saved.is_file():  # 1: some cells failed, all reported
            record.doc = json.loads(saved.read_text(encoding="utf-8"))
        else:
            record.status = "failed"
            record.error = output.strip()[-1500:] or f"exit {returncode}"
    return record


def run_compile_cache(plan: Plan, step: Step, timeout: float) -> Record:
    """The cold/warm compile-cost experiment at ``step.lengths[0]``, fresh processes."""
    import torch

    from fgirewrite.bench import compile_cache
    from fgirewrite.bench.progress import Progress

    config = command.make_config(
        plan.model,
        paper="--paper" in plan.preset,
        smoke="--smoke" in plan.preset,
        cuda=plan.device != "cpu",
        modes="compile",
        lengths=str(step.lengths[0]),
        device=plan.device,
        compile_mode=plan.compile_mode,
        compile_cache=True,
    )
    config = replace(config, worker_timeout=timeout / compile_cache.UNITS)
    record = Record(step, "ok", command="compile_cache.run: cold and warm, fresh processes")
    start = time.monotonic()
    try:
        progress = Progress(compile_cache.UNITS, enabled=False)
        result = compile_cache.run(config, torch.device(plan.device), progress)
    except Exception as exc:  # noqa: BLE001 - a broken experiment must not lose the other steps
        record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
    else:
        record.doc = {"compile_cache": result}
        if result["status"] != "ok":
            record.status, record.error = "failed", f"compile cache {result['status']}"
    record.wall_s = time.monotonic() - start
    return record


def _skipped_result(length: int, mode: str, variant: str, reason: str) -> dict:
    return {
        "length": length,
        "mode": mode,
        "variant": variant,
        "status": "skipped",
        "error": reason,
        "warmup": {},
        "timings": {m: {"status": "skipped", "error": reason} for m in MEASURES},
        "memory": None,
        "checks": {},
        "compile": None,
    }


def merge(plan: Plan, records: list[Record], command_line: str) -> dict:
    """One result document from the steps' documents; cells no step measured are skipped
    with the step's reason."""
    docs = [r.doc for r in records if r.doc and "results" in r.doc]
    if not docs:
        errors = "; ".join(f"{r.step.name}: {r.error}" for r in records if r.error)
        raise RuntimeError(f"no step produced results: {errors}")
    doc = copy.deepcopy(docs[0])
    settings = doc["settings"]
    doc["command"] = command_line
    settings["lengths"] = list(plan.lengths)
    settings["modes"] = [m for m in MODES if any(m in r.step.modes for r in records)]
    settings["compile_cache"] = plan.compile_cache
    doc["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    sizes = BenchConfig(
        path=plan.model, batch=settings["batch"], hidden=settings["hidden"], n_in=settings["n_in"]
    )
    entries: dict[int, dict] = {}
    for d in docs:
        for entry in d["lengths"]:
            entries.setdefault(entry["length"], entry)
    empty = {"shapes": None, "equivalence": None}
    doc["lengths"] = [
        entries.get(n) or {"length": n, "kwargs": sizes.entry_kwargs(n), **empty}
        for n in plan.lengths
    ]
    cells: dict[tuple, dict] = {}
    for d in docs:
        for result in d["results"]:
            cells[(result["length"], result["mode"], result["variant"])] = result
    reasons: dict[tuple, str] = {}
    for r in records:
        if r.step.kind == "compile-cache" or r.status == "ok":
            continue
        for n in r.step.lengths:
            for mode in r.step.modes:
                reasons[(n, mode)] = f"{r.status}: {r.error}"
    doc["results"] = [
        cells.get((n, m, v)) or _skipped_result(n, m, v, reasons.get((n, m), "not planned"))
        for n in plan.lengths
        for m in doc["settings"]["modes"]
        for v in VARIANTS
    ]
    caches = [r.doc["compile_cache"] for r in records if r.step.kind == "compile-cache" and r.doc]
    doc["compile_cache"] = caches[0] if caches else None
    doc["protocol"] = {
        "script": "benchmarks/gpu_paper.py",
        "budget_s": plan.budget_s,
        "device_name": doc["environment"]["device_name"],
        "torch": doc["environment"]["torch"],
        "steps": [r.as_json() for r in records],
    }
    report.add_speedups(doc)
    expected.annotate(doc)
    problems = schema.validate(doc)
    if problems:
        raise RuntimeError(f"merged document does not follow the schema: {problems[:3]}")
    return doc


def slug(name: str) -> str:
    """``NVIDIA H200`` -> ``nvidia-h200``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def out_dir(plan: Plan, doc: dict, root: Path) -> Path:
    kind = "cpu-smoke" if plan.device == "cpu" else "gpu"
    return root / f"{kind}-{slug(doc['environment']['device_name'])}"


Runner = Callable[[Plan, Step, float], Record]


def execute(
    plan: Plan,
    log: Callable[[str], None],
    bench: Runner = run_bench,
    cache: Runner = run_compile_cache,
    clock: Callable[[], float] = time.monotonic,
) -> list[Record]:
    """Run the plan's steps in order within its budget; what each did."""
    deadline = clock() + plan.budget_s - RESERVE_S
    records: list[Record] = []
    for index, step in enumerate(plan.steps, 1):
        left = deadline - clock()
        reason = why_not(step, records, left)
        if reason:
            records.append(Record(step, "skipped", error=reason))
            log(f"step {index}/{len(plan.steps)} {step.name}: skipped ({reason})")
            continue
        timeout = left if step.kind != "eager-script" else min(left, 0.4 * plan.budget_s)
        log(f"step {index}/{len(plan.steps)} {step.name}: running (at most {timeout:.0f} s)")
        record = (cache if step.kind == "compile-cache" else bench)(plan, step, timeout)
        records.append(record)
        tail = f": {record.error.splitlines()[-1][:200]}" if record.error else ""
        done = f"{record.status} in {record.wall_s:.0f} s{tail}"
        log(f"step {index}/{len(plan.steps)} {step.name}: {done}")
    return records


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu_paper.py",
        description="The FGI paper's benchmark on one GPU inside a time budget.",
    )
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds, all steps")
    parser.add_argument("--out-root", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument(
        "--lengths",
        type=lambda text: tuple(int(t) for t in text.split(",")),
        help="sequence lengths (default: the paper's; 2,8 with --cpu-smoke)",
    )
    parser.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode (default: default; the paper's max-autotune autotunes for "
        "minutes per length, more than the budget allows)",
    )
    parser.add_argument("--no-compile-cache", dest="compile_cache", action="store_false")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="the same steps on CPU at tiny sizes (fgirewrite bench --smoke), to check the script",
    )
    args = parser.parse_args(argv)
    if args.budget < MIN_STEP_S + RESERVE_S:
        parser.error(f"--budget must be at least {MIN_STEP_S + RESERVE_S:.0f} s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    plan = make_plan(args)

    def log(line: str) -> None:
        sys.stderr.write(f"gpu_paper: {line}\n")
        sys.stderr.flush()

    if args.dry_run:
        print(f"budget {plan.budget_s:.0f} s ({RESERVE_S:.0f} s kept for the reports)")
        for index, step in enumerate(plan.steps, 1):
            if step.kind == "compile-cache":
                line = "compile cost, cold and warm, 4 fresh processes (if time allows)"
            else:
                line = shlex.join(["python", *bench_command(plan, step, Path("OUT"))[1:]])
            print(f"step {index}: {step.name}: {line}")
        return 0
    if not args.cpu_smoke:
        import torch

        if not torch.cuda.is_available():
            log("error: no CUDA device; run this on a GPU machine (or --cpu-smoke)")
            return 2
    records = execute(plan, log)
    doc = merge(plan, records, shlex.join(["python", "benchmarks/gpu_paper.py", *sys.argv[1:]]))
    sys.stdout.write(report.text(doc))
    for line in command.write(doc, out_dir(plan, doc, args.out_root)):
        log(f"wrote {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
