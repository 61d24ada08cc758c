"""The result document (``bench.json``), schema version 1.

Top level::

    schema: "fgirewrite-bench"      schema_version: 1
    started, finished: ISO 8601 UTC  command: the command line
    environment: device ("cpu" | "cuda"), device_name, torch, python, platform, cpu,
                 cpu_count, threads, interop_threads, load_average, matmul_precision,
                 torchscript_fusion {texpr_fuser, cpu, gpu, llvm}, cuda (null on CPU)
    settings:    the BenchConfig (lengths, batch, hidden, n_in, modes, compile_mode,
                 compile_backend, ...)
    model:       path, entry, rewrite {changed, rewritten {class: function}, skipped}
    lengths:     [{length, kwargs, shapes, equivalence {forward_bitwise_equal,
                   grad_max_abs_diff, grad_close} or {error} when a variant could not run}]
                 (plus "error" when the length could not be built)
    results:     one per length x mode x variant, see below
    compile_cache: null, or {status, length, mode, backend, method, variants {original|fgi: {cold,
                   warm, saved_s, saved_fraction}}} with cold/warm = {status, train_s,
                   no_grad_s, total_s, counters} or {status: "failed", error}

A result::

    length, mode (eager | script | compile | compile-fullgraph), variant (original | fgi)
    status: "ok" | "partial" | "failed" | "skipped" (not run, e.g. out of a time budget)
    error: null or the error text (for skipped: why)
    expected: only on an expected failure: the known limitation of a custom
              autograd.Function it is (see ``expected``); also on failed timings, checks
              and memory
    timings: {train | infer | no_grad: {status: "ok", median_s, iqr_s, rel_iqr, mean_s,
              rounds, blocks, calls, warning, speedup_vs_eager_original,
              speedup_vs_original_same_mode} or {status: "failed" | "skipped", error}}
    warmup:  {wrap_s, first_train_s, first_infer_s, first_no_grad_s, more_s, calls}
    memory:  null, {status: "ok", peak_bytes, method} or {status: "failed", error}
    checks:  {jit_save: {status, error?, expected?}} for script; {} otherwise
    compile: null, or {graphs, graph_breaks, break_reasons} for the compile modes

Speedups are time(eager, original) / time(this), and time(same mode, original) / time(this):
above 1 is faster.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from fgirewrite.bench.config import MEASURES, MODES, VARIANTS, BenchConfig

NAME = "fgirewrite-bench"
VERSION = 1
STATUSES = ("ok", "partial", "failed", "skipped")


def new_document(
    config: BenchConfig, environment: dict, rewrite: dict, command: str, path: Path
) -> dict:
    """An empty result document for ``config``."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {
        "schema": NAME,
        "schema_version": VERSION,
        "started": now,
        "finished": None,
        "command": command,
        "environment": environment,
        "settings": config.as_json(),
        "model": {"path": str(path), "entry": config.entry, "rewrite": rewrite},
        "lengths": [],
        "results": [],
        "compile_cache": None,
    }


def _check_timing(where: str, timing: object, problems: list[str]) -> None:
    if not isinstance(timing, dict) or timing.get("status") not in ("ok", "failed", "skipped"):
        problems.append(f"{where}: no status")
        return
    if timing["status"] != "ok":
        if not timing.get("error"):
            problems.append(f"{where}: {timing['status']} without an error")
        return
    for key in ("median_s", "iqr_s", "rel_iqr", "speedup_vs_eager_original"):
        if key not in timing:
            problems.append(f"{where}: missing {key}")


def validate(doc: dict) -> list[str]:
    """Structural problems of a result document; empty when it follows this schema."""
    problems: list[str] = []
    if doc.get("schema") != NAME or doc.get("schema_version") != VERSION:
        return [f"not a {NAME} v{VERSION} document"]
    for key in ("environment", "settings", "model", "lengths", "results", "compile_cache"):
        if key not in doc:
            problems.append(f"missing {key}")
    if problems:
        return problems
    for key in ("device", "device_name", "torch", "threads"):
        if key not in doc["environment"]:
            problems.append(f"environment: missing {key}")
    settings = doc["settings"]
    expected = {(n, m, v) for n in settings["lengths"] for m in settings["modes"] for v in VARIANTS}
    seen = set()
    for result in doc["results"]:
        combination = (result.get("length"), result.get("mode"), result.get("variant"))
        where = "/".join(map(str, combination))
        seen.add(combination)
        if result.get("mode") not in MODES or result.get("variant") not in VARIANTS:
            problems.append(f"{where}: unknown mode or variant")
        if result.get("status") not in STATUSES:
            problems.append(f"{where}: bad status {result.get('status')!r}")
        elif result["status"] != "ok" and not result.get("error"):
            problems.append(f"{where}: {result['status']} without an error")
        for measure in MEASURES:
            _check_timing(f"{where}/{measure}", result.get("timings", {}).get(measure), problems)
        for name, check in result.get("checks", {}).items():
            if check.get("status") == "failed" and not check.get("error"):
                problems.append(f"{where}/{name}: failed without an error")
    for missing in sorted(expected - seen, key=str):
        problems.append(f"missing result {'/'.join(map(str, missing))}")
    return problems
