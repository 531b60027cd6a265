"""Run every benchmark script in this folder, one after another, and print their tables.

Usage: ``python benchmarks/run_all.py [NAME_SUBSTRING ...]``. Each script is a standalone program
that prints a table of figures; their latest figures, with machine and date, are kept in
docs/benchmarks.md. Benchmarks are not timed assertions and never run inside ``make test``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "__init__.py"})
    if argv:
        scripts = [p for p in scripts if any(a in p.name for a in argv)]
    failed: list[str] = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"--- {script.name}: exit {rc} in {time.monotonic() - started:.1f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
