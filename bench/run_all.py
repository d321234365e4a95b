"""Run every benchmark in bench/ (each in its own process) and print a summary table.

    python -m bench.run_all [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    # gpu_*.py need a CUDA machine (see docs/training.md); training.py runs its CPU mode here.
    scripts = sorted(
        p for p in HERE.glob("*.py")
        if not p.name.startswith(("_", "gpu_")) and p.name != "run_all.py"
    )
    results, failed = [], []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        cmd = [sys.executable, "-m", f"bench.{script.stem}"] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, cwd=HERE.parent, text=True, capture_output=True)
        sys.stdout.write(proc.stdout[-4000:])
        last = (proc.stdout.strip().splitlines() or [""])[-1]
        try:
            results.append(json.loads(last))
        except json.JSONDecodeError:
            failed.append(script.name)
            sys.stderr.write(proc.stderr[-4000:])
    print("\nbench                  ours          anchor        ratio   unit")
    for r in results:
        print(f"{str(r.get('bench')):22} {str(r.get('ours'))[:12]:13} {str(r.get('anchor'))[:12]:13} "
              f"{str(r.get('ratio'))[:7]:7} {r.get('unit')}")
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
