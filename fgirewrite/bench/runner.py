"""Run every length, mode and variant; a failure is recorded as a result, never raised."""

from __future__ import annotations

import contextlib
import datetime
import sys
import time
from collections.abc import Callable, Iterator

import torch

from fgirewrite.bench import (
    compile_cache,
    compiler,
    expected,
    memory,
    models,
    report,
    schema,
    timing,
)
from fgirewrite.bench import device as dev
from fgirewrite.bench.config import COMPILE_MODES, MEASURES, VARIANTS, BenchConfig
from fgirewrite.bench.progress import Progress

ERROR_CHARS = 2000


def failure(exc: BaseException) -> dict:
    """A failed measurement, with its error."""
    text = f"{type(exc).__name__}: {str(exc).strip()}"
    return {"status": "failed", "error": text[:ERROR_CHARS]}


def _mode_units(config: BenchConfig) -> int:
    return len(VARIANTS) * (1 + len(MEASURES) * config.rounds + config.memory)


def units(config: BenchConfig) -> int:
    """Progress units of a run, for the progress bar."""
    total = len(config.lengths) * (1 + len(config.modes) * _mode_units(config))
    total += config.compiling
    return total + (compile_cache.UNITS if config.compile_cache else 0)


def _prepare(
    result: dict,
    model: torch.nn.Module,
    work: models.Workload,
    config: BenchConfig,
    device: torch.device,
) -> dict[str, Callable] | None:
    """Wrap, save-check and warm up one variant; the timed statements, or None if it failed."""
    mode = result["mode"]
    if mode in COMPILE_MODES:
        compiler.reset_stats()
    try:
        start = time.perf_counter()
        options = compiler.options(config.compile_backend, config.compile_mode)
        run = models.wrap(model, mode, options)
        result["warmup"]["wrap_s"] = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - a failure is a result, never an exception
        result.update(failure(exc))
        return None
    if mode == "script":
        try:
            assert isinstance(run, torch.jit.ScriptModule)  # torch.jit.script of a module
            models.jit_save(run)
            result["checks"]["jit_save"] = {"status": "ok"}
        except Exception as exc:  # noqa: BLE001 - likewise
            result["checks"]["jit_save"] = failure(exc)
    parameters = list(model.parameters())
    fns = models.steps(run, work, parameters, model)
    for measure in MEASURES:
        try:
            result["warmup"][f"first_{measure}_s"] = dev.wall(fns[measure], device)
        except Exception as exc:  # noqa: BLE001 - likewise
            result["timings"][measure] = failure(exc)
    start = time.perf_counter()
    for _ in range(config.warmup):
        for measure in MEASURES:
            if measure not in result["timings"]:
                fns[measure]()
    dev.synchronize(device)
    result["warmup"]["more_s"] = time.perf_counter() - start
    result["warmup"]["calls"] = config.warmup
    if mode in COMPILE_MODES:
        result["compile"] = compiler.stats()
    return fns


def _status(result: dict) -> None:
    if result["status"] == "failed":
        for measure in MEASURES:
            result["timings"].setdefault(measure, {"status": "failed", "error": result["error"]})
        return
    failed = [m for m in MEASURES if result["timings"][m]["status"] != "ok"]
    if len(failed) == len(MEASURES):
        result["status"], result["error"] = "failed", result["timings"][failed[0]]["error"]
    elif failed:
        result["status"] = "partial"
        result["error"] = "; ".join(f"{m}: {result['timings'][m]['error']}" for m in failed)


def run_mode(
    work: models.Workload,
    length: int,
    mode: str,
    config: BenchConfig,
    device: torch.device,
    progress: Progress,
) -> list[dict]:
    """Both variants in one mode, measured alternately so drift hits both alike."""
    results: dict[str, dict] = {}
    fns: dict[str, dict[str, Callable]] = {}
    for variant in VARIANTS:
        result = {
            "length": length,
            "mode": mode,
            "variant": variant,
            "status": "ok",
            "error": None,
            "warmup": {},
            "timings": {},
            "memory": None,
            "checks": {},
            "compile": None,
        }
        results[variant] = result
        fresh = compiler.fresh() if mode in COMPILE_MODES else contextlib.nullcontext()
        with progress.unit(f"T={length} {mode} {variant}: build and warm up"), fresh:
            prepared = _prepare(result, work.models[variant], work, config, device)
        if prepared is not None:
            fns[variant] = prepared
    for measure in MEASURES:
        rounds: dict[str, list] = {v: [] for v in fns}
        for index in range(config.rounds):
            for variant in fns:
                with progress.unit(
                    f"T={length} {mode} {variant}: {measure} (round {index + 1}/{config.rounds})"
                ):
                    if measure in results[variant]["timings"]:
                        continue  # already failed
                    try:
                        rounds[variant].append(
                            timing.measure(
                                fns[variant][measure],
                                device,
                                config.min_run_time,
                                f"{mode}/{variant}/{measure}",
                            )
                        )
                    except Exception as exc:  # noqa: BLE001 - a failure is a result
                        results[variant]["timings"][measure] = failure(exc)
        for variant, measured in rounds.items():
            if measure not in results[variant]["timings"]:
                results[variant]["timings"][measure] = timing.summary(measured)
    for variant in VARIANTS:
        if config.memory:
            with progress.unit(f"T={length} {mode} {variant}: peak memory"):
                if variant in fns and results[variant]["timings"]["train"]["status"] == "ok":
                    try:
                        results[variant]["memory"] = memory.peak(fns[variant]["train"], device)
                    except Exception as exc:  # noqa: BLE001 - a failure is a result
                        results[variant]["memory"] = failure(exc)
        _status(results[variant])
    progress.done += (len(VARIANTS) - len(fns)) * len(MEASURES) * config.rounds
    return [results[v] for v in VARIANTS]


def _failed_length(length: int, config: BenchConfig, exc: Exception) -> list[dict]:
    fail = failure(exc)
    return [
        {
            "length": length,
            "mode": mode,
            "variant": variant,
            "status": "failed",
            "error": fail["error"],
            "warmup": {},
            "memory": None,
            "checks": {},
            "compile": None,
            "timings": {m: dict(fail) for m in MEASURES},
        }
        for mode in config.modes
        for variant in VARIANTS
    ]


@contextlib.contextmanager
def _torch_settings(config: BenchConfig) -> Iterator[None]:
    """Thread count and matmul precision for the run, restored afterwards."""
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.matmul_precision:
            torch.set_float32_matmul_precision(config.matmul_precision)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)


def _lengths(
    doc: dict, pair: models.Pair, config: BenchConfig, device: torch.device, progress: Progress
) -> None:
    for length in config.lengths:
        kwargs = config.entry_kwargs(length)
        entry = {"length": length, "kwargs": kwargs, "shapes": None, "equivalence": None}
        doc["lengths"].append(entry)
        with progress.unit(f"T={length}: build both variants, check equivalence"):
            try:
                work = models.workload(pair, kwargs, device)
                entry["shapes"] = work.shapes
                entry["equivalence"] = models.equivalence(work)
            except Exception as exc:
                if isinstance(exc, models.ModelError):
                    raise
                entry["error"] = failure(exc)["error"]
                doc["results"] += _failed_length(length, config, exc)
                progress.done += len(config.modes) * _mode_units(config)
                continue
        for mode in config.modes:
            if mode in COMPILE_MODES:
                torch._dynamo.reset()
            doc["results"] += run_mode(work, length, mode, config, device, progress)
        del work


def run(
    config: BenchConfig, progress: Progress | None = None, pair: models.Pair | None = None
) -> dict:
    """Benchmark ``config.path`` (already imported as ``pair``, or imported here); the result
    document (see ``schema``)."""
    progress = progress or Progress(units(config), enabled=False)
    device = dev.choose(config.device)
    pair = pair or models.load(config.path, config.entry)
    command = " ".join(["fgirewrite", *sys.argv[1:]])
    with _torch_settings(config):
        doc = schema.new_document(config, dev.describe(device), pair.rewrite, command, pair.path)
        with compiler.isolated() if config.compiling else contextlib.nullcontext():
            if config.compiling:
                with progress.unit("start torch.compile up"), contextlib.suppress(Exception):
                    # if this fails, each compiled cell shows the error
                    compiler.start(device, config.compile_backend)
            _lengths(doc, pair, config, device, progress)
        if config.compile_cache:
            doc["compile_cache"] = compile_cache.run(config, device, progress)
    doc["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report.add_speedups(doc)
    expected.annotate(doc)
    return doc
