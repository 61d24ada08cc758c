"""Run fgirewrite over the research-code corpus and compare what it does with human judgment.

    python benchmarks/research_corpus.py [--work DIR] [--jobs N] [--only OWNER/NAME,...]
                                         [--corpus DIR] [--timeout S]

The corpus (tests/corpus/research/) is public research code that defines custom
``torch.autograd.Function`` classes: spiking networks, binary and quantized networks, other
straight-through estimators. ``MANIFEST.json`` pins every file by repository, commit and path
(with its licence, URL and sha256); ``EXPECTED.json`` holds, for every Function class, whether
a careful human would rewrite it into FGI or leave it, why, and whether its rewrite can be
verified on a CPU-only machine with torch, numpy and scipy alone.

The files themselves are third-party code and are not committed (the folder's .gitignore);
each must be present, byte for byte (sha256), in ``--corpus``. A missing or changed file is
reported and skipped.

For every repository, its files are copied alone into ``--work`` (no package layout), then
``fgirewrite --check`` (static analysis) and ``fgirewrite --write`` (every rewrite verified
before it is written) run on the copy, each in a fresh process with this checkout's package.
Per repository: Function classes, rewritten and verified, failed verification, left alone by
reason code, files that could not be analysed, and the classes whose outcome differs from
EXPECTED.json. Results go to benchmarks/results/research_corpus.json and .md. No network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "research"
RESULTS = Path(__file__).parent / "results"
LEGEND = """\
Each repository's corpus files were copied alone into a scratch folder and run through
`fgirewrite --check` and then `fgirewrite --write` (every rewrite verified before it is written,
CPU only). *Agree with EXPECTED* compares each Function class with the human judgment in
`tests/corpus/research/EXPECTED.json`: a class to rewrite agrees when it is rewritten, or when
its verification fails and EXPECTED.json says it cannot be verified on this machine (CUDA,
missing packages, factory arguments); a class to leave agrees when it is left alone and static
analysis also refused it.

"""


def load(corpus: Path) -> tuple[list[dict], list[dict]]:
    manifest = json.loads((corpus / "MANIFEST.json").read_text())
    expected = json.loads((corpus / "EXPECTED.json").read_text())
    return manifest, expected


def stage(entries: list[dict], corpus: Path, work: Path) -> tuple[Path, list[str]]:
    """Copy a repository's corpus files into a fresh folder; the problems found on the way."""
    folder = work / entries[0]["file"].split("/")[0]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    problems = []
    for entry in entries:
        source = corpus / entry["file"]
        if not source.is_file():
            problems.append(f"{entry['file']}: missing from the corpus folder")
            continue
        data = source.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['file']}: differs from the manifest's sha256")
            continue
        (folder / source.name).write_bytes(data)
    return folder, problems


def fgirewrite(mode: str, folder: Path, timeout: float) -> dict:
    """``fgirewrite --MODE --output-format json .`` in the folder; its JSON report."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fgirewrite", f"--{mode}", "--output-format", "json", "."],
            capture_output=True,
            text=True,
            cwd=folder,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"crash": f"--{mode} timed out after {timeout:.0f} s"}
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"crash": f"--{mode} exited {done.returncode} without a JSON report: {tail}"}
    report["exit"] = done.returncode
    return report


def _key(repo_dir: str, finding: dict) -> tuple[str, str]:
    return f"{repo_dir}/{finding['path'].removeprefix('./')}", finding["class"]


def compare(expect: dict | None, static: dict | None, final: dict | None, error: str | None):
    """(agrees, verdict) for one class: what the tool did against what EXPECTED.json says."""
    if expect is None:
        return False, "not in EXPECTED.json"
    if error is not None:
        agrees = expect["expect"] == "leave"
        return agrees, "file not analysed: " + error
    if final is None:
        return False, "not found by fgirewrite"
    status, wanted = final["status"], expect["expect"]
    if wanted == "leave":
        if status == "rewritten":
            return False, "rewritten, but should be left alone"
        if static is not None and static["status"] == "would-rewrite":
            return False, "left alone only because verification failed; static analysis accepts it"
        return True, "left alone"
    if status == "rewritten":
        return True, "rewritten"
    if status == "failed":
        if not expect.get("verifiable", True):
            return True, "verification cannot run here: " + expect.get("verifiable_reason", "")
        return False, "verification refused a rewrite that should verify"
    return False, "left alone, but should be rewritten"


def run_repo(repo: str, entries: list[dict], expected: list[dict], args) -> dict:
    start = time.perf_counter()
    folder, problems = stage(entries, args.corpus, args.work)
    repo_dir = folder.name
    row: dict = {"repo": repo, "files": len(entries), "corpus_problems": problems}
    if len(problems) == len(entries):
        row["unavailable"] = "no corpus file present"
        return row
    static = fgirewrite("check", folder, args.timeout)
    final = fgirewrite("write", folder, args.timeout)
    crashes = [r["crash"] for r in (static, final) if "crash" in r]
    errors = {
        f"{repo_dir}/{e['path'].removeprefix('./')}": e["message"] for e in final.get("errors", [])
    }
    static_by = {_key(repo_dir, f): f for f in static.get("findings", [])}
    final_by = {_key(repo_dir, f): f for f in final.get("findings", [])}
    mine = {(e["file"], e["class"]): e for e in expected if e["file"].startswith(repo_dir + "/")}
    classes = []
    for key in sorted(set(final_by) | set(mine) | set(static_by)):
        f, s, e = final_by.get(key), static_by.get(key), mine.get(key)
        agrees, verdict = compare(e, s, f, errors.get(key[0]))
        got = f or s or {}
        codes = (e or {}).get("codes")
        # Left alone as expected: does the reason code name the blocker a human would name?
        right_blocker = (
            None
            if not (agrees and codes and f and f["status"] == "skipped")
            else f.get("code") in codes
        )
        classes.append(
            {
                "file": key[0],
                "class": key[1],
                "line": got.get("line", e and e.get("line")),
                "static": s and {k: s.get(k) for k in ("status", "code", "message")},
                "status": f["status"] if f else ("error" if key[0] in errors else None),
                "code": f.get("code") if f else None,
                "message": f.get("message") if f else errors.get(key[0]),
                "function": f.get("function") if f else None,
                "expect": e and e["expect"],
                "why": e and e["why"],
                "verifiable": e and e.get("verifiable", True),
                "agrees": agrees,
                "verdict": verdict,
                "right_blocker": right_blocker,
                "blocker_codes": codes,
            }
        )
    found = [c for c in classes if c["status"] not in (None, "error")]
    status = Counter(c["status"] for c in found)
    left = Counter(c["code"] for c in found if c["status"] == "skipped")
    row |= {
        "classes": len(classes),
        "rewritten_and_verified": status["rewritten"],
        "failed_verification": status["failed"],
        "left_alone": dict(sorted(left.items())),
        "errors": errors,
        "crashes": crashes,
        "agree": sum(c["agrees"] for c in classes),
        "differ": sum(not c["agrees"] for c in classes),
        "wrong_blocker": sum(c["right_blocker"] is False for c in classes),
        "seconds": round(time.perf_counter() - start, 1),
        "details": classes,
    }
    return row


def _cell(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| repository | files | Function classes | rewritten + verified | failed verification "
        "| left alone (reason: count) | errors | crashes | agree with EXPECTED | differ |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    totals: Counter = Counter()
    for row in rows:
        if "unavailable" in row:
            lines.append(f"| {row['repo']} | {row['files']} | {row['unavailable']} | | | | | | | |")
            continue
        left = ", ".join(f"{k}: {v}" for k, v in row["left_alone"].items())
        lines.append(
            f"| {row['repo']} | {row['files']} | {row['classes']} | "
            f"{row['rewritten_and_verified']} | {row['failed_verification']} | {left} | "
            f"{len(row['errors'])} | {len(row['crashes'])} | {row['agree']} | {row['differ']} |"
        )
        for key in ("files", "classes", "rewritten_and_verified", "failed_verification", "agree"):
            totals[key] += row[key]
        totals["errors"] += len(row["errors"])
        totals["crashes"] += len(row["crashes"])
        totals["differ"] += row["differ"]
        totals.update({f"left:{k}": v for k, v in row["left_alone"].items()})
    left = ", ".join(f"{k[5:]}: {v}" for k, v in sorted(totals.items()) if k.startswith("left:"))
    lines.append(
        f"| **all ({len(rows)} repositories)** | {totals['files']} | {totals['classes']} | "
        f"{totals['rewritten_and_verified']} | {totals['failed_verification']} | {left} | "
        f"{totals['errors']} | {totals['crashes']} | {totals['agree']} | {totals['differ']} |"
    )
    differing = [c for row in rows for c in row.get("details", []) if not c["agrees"]]
    lines += ["", f"## Classes whose outcome differs from EXPECTED.json ({len(differing)})", ""]
    lines += [
        "| class | file:line | fgirewrite | expected | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in differing:
        said = c["status"] or "-"
        if c["code"]:
            said += f" [{c['code']}] {c['message']}"
        static = c["static"]
        if static and static["status"] == "would-rewrite" and c["status"] == "failed":
            said = "would-rewrite statically; " + said
        expected = f"{c['expect']}: {c['why']}" if c["expect"] else "-"
        lines.append(
            f"| {c['class']} | {c['file']}:{c['line']} | {_cell(said)} | {_cell(expected)} "
            f"| {c['verdict']} |"
        )
    wrong = [c for row in rows for c in row.get("details", []) if c["right_blocker"] is False]
    lines += [
        "",
        f"## Left alone as expected, but the reason names another blocker ({len(wrong)})",
        "",
        "| class | file:line | fgirewrite | the blocker (EXPECTED.json) |",
        "| --- | --- | --- | --- |",
    ]
    for c in wrong:
        lines.append(
            f"| {c['class']} | {c['file']}:{c['line']} | [{c['code']}] {_cell(c['message'])} "
            f"| {'/'.join(c['blocker_codes'])}: {_cell(c['why'])} |"
        )
    problems = [p for row in rows for p in row.get("corpus_problems", [])]
    if problems:
        lines += ["", "Corpus files missing or changed: " + "; ".join(problems)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fgirewrite-research-corpus"))
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="folder with the files")
    parser.add_argument("--jobs", type=int, default=1, help="repositories processed at once")
    parser.add_argument("--only", default="", help="comma-separated owner/name to run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per fgirewrite run")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    manifest, expected = load(args.corpus)
    by_repo: dict[str, list[dict]] = defaultdict(list)
    for entry in manifest:
        by_repo[entry["repo"]].append(entry)
    wanted = [r for r in args.only.split(",") if r]
    unknown = [r for r in wanted if r not in by_repo]
    if unknown:
        parser.error(f"not in the manifest: {', '.join(unknown)}")
    repos = sorted(wanted or by_repo, key=str.lower)

    def one(repo: str) -> dict:
        row = run_repo(repo, by_repo[repo], expected, args)
        summary = row.get("unavailable") or (
            f"{row['classes']} classes, {row['rewritten_and_verified']} rewritten, "
            f"{row['failed_verification']} failed verification, {row['differ']} differ"
        )
        print(f"{repo}: {summary}", file=sys.stderr, flush=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(one, repos))
    if all("unavailable" in row for row in rows):
        sys.exit(
            f"research_corpus.py: error: no corpus file is present in {args.corpus} "
            "(they are not committed: see tests/corpus/research/README.md); nothing written"
        )
    RESULTS.mkdir(exist_ok=True)
    previous = RESULTS / "research_corpus.json"
    old = json.loads(previous.read_text())["repositories"] if previous.exists() else []
    kept = {r["repo"]: r for r in old if r["repo"] in by_repo and (wanted or r["repo"] in repos)}
    for row in rows:  # a repository whose files are absent keeps its previous results
        if "unavailable" in row and row["repo"] in kept:
            print(f"{row['repo']}: files absent, previous results kept", file=sys.stderr)
        else:
            kept[row["repo"]] = row
    rows = [kept[r] for r in sorted(kept, key=str.lower)]
    report = {
        "fgirewrite_commit": _head(),
        "repositories": rows,
    }
    previous.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(rows)
    (RESULTS / "research_corpus.md").write_text(
        "# fgirewrite on the research-code corpus\n\n"
        "Generated by `python benchmarks/research_corpus.py` "
        f"(the fgirewrite package as of commit {report['fgirewrite_commit']}).\n\n" + LEGEND + table
    )
    print(table)


def _head() -> str:
    """The last commit that changed the fgirewrite package (what the results depend on)."""
    done = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", "fgirewrite"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
