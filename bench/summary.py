"""Write bench/results/summary.md from every bench/results/*.json that a benchmark wrote.

`make bench` runs it after the benchmarks; run it alone to rebuild the table."""

from __future__ import annotations

import json
import sys

from bench.results import RESULTS_DIR, summary_markdown


def main() -> int:
    """Read the results, write summary.md beside them and print it."""
    docs = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        if "figures" in doc:
            docs.append(doc)
        else:
            print(f"skipping {path.name}: not written by bench.results", file=sys.stderr)
    text = summary_markdown(docs)
    (RESULTS_DIR / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
