"""Speedup ratios, and the result document as a terminal table and as Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field

from fgirewrite.bench import expected
from fgirewrite.bench.config import MEASURE_TITLES, MEASURES, VARIANT_TITLES

BASELINE = ("eager", "original")


def add_speedups(doc: dict) -> None:
    """Add to each ok timing its speedup over eager + original and over the original in the
    same mode: ratios of medians, above 1 is faster."""
    index = {(r["length"], r["mode"], r["variant"]): r for r in doc["results"]}

    def median(length: int, mode: str, variant: str, measure: str) -> float | None:
        result = index.get((length, mode, variant))
        timing = result["timings"].get(measure) if result else None
        return timing["median_s"] if timing and timing["status"] == "ok" else None

    for r in doc["results"]:
        for measure, timing in r["timings"].items():
            if timing["status"] != "ok":
                continue
            base = median(r["length"], *BASELINE, measure)
            same = median(r["length"], r["mode"], "original", measure)
            here = timing["median_s"]
            timing["speedup_vs_eager_original"] = base / here if base else None
            timing["speedup_vs_original_same_mode"] = same / here if same else None


def seconds(value: float | None) -> str:
    """A duration with three significant digits and a unit."""
    if value is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale or unit == "us":
            scaled = value / scale
            return f"{scaled:.3g} {unit}" if scaled < 1000 else f"{scaled:.0f} {unit}"
    raise AssertionError


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def mebibytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.2f} MiB"


@dataclass
class Table:
    """A titled table; rendered as aligned text or as Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    labels: int = 1  # leading columns that are labels (left-aligned), not figures


def _not_ok(timing: dict) -> str:
    """How a timing that did not run is shown: an expected failure is 'unsupported'."""
    if timing["status"] == "skipped":
        return "skipped"
    return "unsupported" if timing.get("expected") else "failed"


def _timing_cells(timing: dict) -> list[str]:
    if timing["status"] != "ok":
        return [_not_ok(timing), "", ""]
    return [
        seconds(timing["median_s"]),
        f"{timing['rel_iqr']:.0%}",
        ratio(timing.get("speedup_vs_eager_original")),
    ]


def _first_calls(result: dict) -> str:
    warmup = result["warmup"]
    total = sum(warmup.get(f"first_{m}_s", 0.0) for m in MEASURES) + warmup.get("wrap_s", 0.0)
    return f"{total:.2f}" if warmup else "-"


def _length_title(doc: dict, length: int) -> str:
    entry = next(e for e in doc["lengths"] if e["length"] == length)
    kw = entry["kwargs"]
    shapes = " ".join(str(s) for s in entry["shapes"] or [])
    title = (
        f"T={length}: batch {kw['batch']}, hidden {kw['n_hidden']}, n_in {kw['n_in']}, "
        f"inputs {shapes or '?'}"
    )
    eq = entry.get("equivalence")
    if eq and "error" in eq:
        title += f"; eager check not possible: {short(eq['error'], 200)}"
    elif eq:
        forward = "bit-equal" if eq["forward_bitwise_equal"] else "DIFFERS"
        title += (
            f"; eager check: forward {forward}, gradients max |diff| {eq['grad_max_abs_diff']:.2g}"
        )
    if entry.get("error"):
        title += f"; could not build: {entry['error'][:200]}"
    return title


def timing_tables(doc: dict) -> list[Table]:
    """Per length: every mode and variant, median / IQR / speedup vs eager original."""
    headers = ["mode", "variant"]
    for measure in MEASURES:
        title = MEASURE_TITLES[measure]
        headers += [f"{title}", "IQR", "speedup"]
    headers.append("first calls s")
    tables = []
    for length in doc["settings"]["lengths"]:
        table = Table(_length_title(doc, length), headers, labels=2)
        for r in doc["results"]:
            if r["length"] != length:
                continue
            row = [r["mode"], VARIANT_TITLES[r["variant"]]]
            for measure in MEASURES:
                row += _timing_cells(r["timings"][measure])
            row.append(_first_calls(r))
            table.rows.append(row)
        tables.append(table)
    return tables


def fgi_tables(doc: dict) -> list[Table]:
    """Per length: FGI over the original in the same mode, and training-step peak memory."""
    tables = []
    for length in doc["settings"]["lengths"]:
        table = Table(
            f"T={length}: FGI vs original in the same mode (speedup > 1: FGI faster)",
            ["mode", *MEASURES, "peak memory, train: original", "FGI", "FGI/original"],
        )
        by = {(r["mode"], r["variant"]): r for r in doc["results"] if r["length"] == length}
        for mode in doc["settings"]["modes"]:
            fgi, orig = by[(mode, "fgi")], by[(mode, "original")]
            row = [mode]
            for measure in MEASURES:
                t, base = fgi["timings"][measure], orig["timings"][measure]
                if t["status"] != "ok":
                    row.append(_not_ok(t))
                elif base["status"] != "ok":
                    row.append(f"original {_not_ok(base)}")
                else:
                    row.append(ratio(t.get("speedup_vs_original_same_mode")))
            peaks = [
                r["memory"]["peak_bytes"] if r["memory"] and r["memory"]["status"] == "ok" else None
                for r in (orig, fgi)
            ]
            row += [
                mebibytes(peaks[0]),
                mebibytes(peaks[1]),
                f"{peaks[1] / peaks[0]:.2f}" if None not in peaks and peaks[0] else "-",
            ]
            table.rows.append(row)
        tables.append(table)
    return tables


def compile_table(doc: dict) -> Table | None:
    """Cold and warm compile seconds per variant, and what the warm process's caches did."""
    cc = doc.get("compile_cache")
    if not cc:
        return None
    table = Table(
        f"Compile cost, torch.compile (backend {cc.get('backend', 'inductor')}, mode "
        f"{cc['compile_mode']}), T={cc['length']}: "
        "first training step + first no_grad call, fresh process each",
        [
            "variant",
            "cold s",
            "warm s (caches on)",
            "saved",
            "warm: AOTAutograd cache",
            "warm: FX graph cache",
        ],
    )
    for variant, entry in cc["variants"].items():
        cold, warm = entry["cold"], entry["warm"]
        row = [
            VARIANT_TITLES[variant],
            f"{cold['total_s']:.1f}" if cold["status"] == "ok" else "failed",
            f"{warm['total_s']:.1f}" if warm["status"] == "ok" else "failed",
            f"{entry['saved_s']:.1f} s ({entry['saved_fraction']:.0%})"
            if "saved_s" in entry
            else "-",
        ]
        if warm["status"] == "ok":
            row += [_cache_counts(warm["counters"], c) for c in ("autograd_cache", "fxgraph_cache")]
        else:
            row += ["-", "-"]
        table.rows.append(row)
    return table


def short(error: str, limit: int = 240) -> str:
    """An error's first line, truncated: the full text is in the JSON."""
    line = error.strip().splitlines()[0] if error.strip() else error
    return line if len(line) <= limit else line[: limit - 3] + "..."


NOTE_TITLES = {
    "failed": "failed (unexpected: exit code 1)",
    "expected": "expected failures (known limitations of the original's custom "
    "autograd.Function, which the FGI rewrite removes)",
    "skipped": "skipped",
    "noisy": "noisy",
    "remarks": "remarks",
}


def notes(doc: dict) -> dict[str, list[str]]:
    """Failures (unexpected, and expected with their reason), skipped cells, noisy cells and
    other remarks, as lines; keyed as ``NOTE_TITLES``."""
    failed, known, skipped, noisy, remarks = [], [], [], [], []
    for f in expected.failures(doc):
        if f.expected:
            known.append(f"{f.where}: {f.expected} ({short(f.error, 160)})")
        else:
            failed.append(f"{f.where}: {short(f.error)}")
    for r in doc["results"]:
        where = f"T={r['length']} {r['mode']} {VARIANT_TITLES[r['variant']]}"
        if r["status"] == "skipped":
            skipped.append(f"{where}: {short(r['error'])}")
        elif r["status"] != "failed":
            for measure in MEASURES:
                t = r["timings"][measure]
                if t["status"] == "ok" and t.get("warning"):
                    noisy.append(f"{where} {measure}: {t['warning']}")
        if r["compile"] and r["compile"]["graph_breaks"]:
            remarks.append(
                f"{where}: {r['compile']['graphs']} graphs, "
                f"{r['compile']['graph_breaks']} graph breaks "
                f"({'; '.join(r['compile']['break_reasons'])})"
            )
    cc = doc.get("compile_cache")
    if cc:
        for variant, entry in cc["variants"].items():
            for reason in entry["warm"].get("bypass_reasons", [])[:2]:
                remarks.append(f"compile cache, {VARIANT_TITLES[variant]}: {reason}")
    env = doc["environment"]
    load = env.get("load_average")
    busy = load and load[0] >= (env["cpu_count"] or 1)
    if busy and env["device"] == "cpu" and env["threads"] > 1:
        remarks.append(
            f"busy machine: load {load[0]:.1f} on {env['cpu_count']} CPUs at the "
            "start; with several threads, CPU timings suffer (try --threads 1)"
        )
    if doc["settings"].get("smoke") and noisy:
        remarks.append(f"smoke run: the figures mean nothing ({len(noisy)} noisy cells not listed)")
        noisy = []
    for name, why in doc["model"]["rewrite"]["skipped"].items():
        remarks.append(f"not rewritten (runs as the original in both variants): {name} {why}")
    if not doc["model"]["rewrite"]["changed"]:
        remarks.append("the rewrite changed nothing: both variants are the same code")
    return {
        "failed": failed,
        "expected": known,
        "skipped": skipped,
        "noisy": noisy,
        "remarks": remarks,
    }


def header_lines(doc: dict) -> list[str]:
    env, s = doc["environment"], doc["settings"]
    preset = "paper protocol" if s["paper"] else "smoke run" if s["smoke"] else "quick run"
    return [
        f"fgirewrite bench {doc['model']['path']} (entry {doc['model']['entry']}), {preset}: "
        f"T in {', '.join(map(str, s['lengths']))}, batch {s['batch']}, hidden {s['hidden']}, "
        f"modes {', '.join(s['modes'])}",
        f"device {env['device']} ({env['device_name']}), {env['threads']} thread(s), "
        f"torch {env['torch']}, python {env['python']}, matmul precision "
        f"{env['matmul_precision']}",
        f"median of {s['rounds']} round(s) x >= {s['min_run_time']} s per cell, original and "
        f"FGI alternating; {s['warmup']} warm-up calls; torch.compile backend "
        f"{s.get('compile_backend', 'inductor')}, mode {s['compile_mode']}; "
        "speedup = time(eager original) / time(cell)",
    ]


def _widths(table: Table) -> list[int]:
    return [max(len(str(x)) for x in col) for col in zip(table.headers, *table.rows, strict=True)]


def render_text(table: Table) -> str:
    widths = _widths(table)
    lines = [table.title]
    for row in (table.headers, *table.rows):
        lines.append(
            "  ".join(
                c.rjust(w) if i >= table.labels else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def render_markdown(table: Table) -> str:
    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(table.headers) + " |",
        "|"
        + "|".join("---" if i < table.labels else "---:" for i in range(len(table.headers)))
        + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _tables(doc: dict) -> list[Table]:
    tables = [t for pair in zip(timing_tables(doc), fgi_tables(doc), strict=True) for t in pair]
    cc = compile_table(doc)
    return tables + ([cc] if cc else [])


def text(doc: dict) -> str:
    """The terminal report."""
    parts = ["\n".join(header_lines(doc))]
    parts += [render_text(t) for t in _tables(doc)]
    for key, lines in notes(doc).items():
        if lines:
            parts.append(f"{NOTE_TITLES[key]}:\n" + "\n".join(f"  {line}" for line in lines))
    return "\n\n".join(parts) + "\n"


def markdown(doc: dict) -> str:
    """The report as Markdown."""
    parts = ["# fgirewrite bench", "\n".join(f"- {line}" for line in header_lines(doc))]
    parts += [render_markdown(t) for t in _tables(doc)]
    for key, lines in notes(doc).items():
        if lines:
            parts.append(f"**{NOTE_TITLES[key]}**\n\n" + "\n".join(f"- {line}" for line in lines))
    if doc.get("compile_cache"):
        parts.append(f"Compile cost method: {doc['compile_cache']['method']}.")
    memory = next(
        (
            r["memory"]["method"]
            for r in doc["results"]
            if r["memory"] and r["memory"]["status"] == "ok"
        ),
        None,
    )
    if memory:
        parts.append(f"Peak memory method: {memory}.")
    return "\n\n".join(parts) + "\n"


def _cache_counts(counters: dict, cache: str) -> str:
    """``hit 2, bypass 1``: the non-zero counters of one compile cache."""
    counts = {k: counters[f"{cache}_{k}"] for k in ("hit", "miss", "bypass")}
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n) or "-"
