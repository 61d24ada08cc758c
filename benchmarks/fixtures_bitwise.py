"""How many surrogates of the before/after fixtures verify with bit-identical gradients.

    python benchmarks/fixtures_bitwise.py

Every class of ``tests/fixtures/rewrite/*.py`` is rewritten and verified (``verify_rewrite``:
every probe set, in float32, float64, bfloat16 and float16); a surrogate counts as bitwise
when every dtype's elementwise gradients equal the original's bit for bit (``Check.bitwise``;
a learnable input's summed gradient is compared within its summation bound, not bitwise).
Writes benchmarks/results/fixtures_bitwise.json and prints the count.
"""

from __future__ import annotations

import json
from pathlib import Path

from fgirewrite.rewrite import rewrite_source
from fgirewrite.verify import verify_rewrite

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "rewrite"
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    rows = []
    for path in sorted(FIXTURES.glob("*.py")):
        result = rewrite_source(path.read_bytes(), str(path))
        for report in verify_rewrite(result, path):
            rows.append(
                {
                    "file": path.name,
                    "class": report.name,
                    "ok": report.ok,
                    "not_bitwise": [c.dtype for c in report.checks if not c.bitwise],
                }
            )
    bitwise = sum(r["ok"] and not r["not_bitwise"] for r in rows)
    summary = {"surrogates": len(rows), "verified": sum(r["ok"] for r in rows), "bitwise": bitwise}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fixtures_bitwise.json").write_text(json.dumps({**summary, "rows": rows}, indent=1))
    print(
        f"{summary['surrogates']} surrogates, {summary['verified']} verified, "
        f"{bitwise} with bit-identical gradients in every dtype"
    )


if __name__ == "__main__":
    main()
