"""Cost of `%load_ext nbmodelpack` in a fresh process, against `import IPython` (goal: < 0.3 s).

Each run is a new interpreter (cold imports, warm OS file cache). Prints the
medians and the ratio of our cost to the IPython baseline, the cost of the
first verb (which loads the store), and checks that loading the extension
imported neither torch nor ipywidgets nor matplotlib.

    python bench/import_cost.py [RUNS]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL_SECONDS = 0.3
ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import IPython
from IPython.core.interactiveshell import InteractiveShell
t1 = time.perf_counter()
shell = InteractiveShell.instance()
t2 = time.perf_counter()
shell.run_line_magic("load_ext", "nbmodelpack")
t3 = time.perf_counter()
heavy = sorted(m for m in ("torch", "ipywidgets", "matplotlib") if m in sys.modules)
shell.run_line_magic("modelpack", "ls")  # the first verb loads the store and its dependencies
t4 = time.perf_counter()
print(json.dumps({"import_ipython": t1 - t0, "load_ext": t3 - t2, "first_ls": t4 - t3, "heavy": heavy}))
"""


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    home = tempfile.mkdtemp(prefix="nbmp-bench-")  # an empty store, not the user's
    env = dict(os.environ, NBMODELPACK_HOME=home, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
        samples.append(json.loads(out.strip().splitlines()[-1]))
    base = statistics.median(s["import_ipython"] for s in samples)
    ours = statistics.median(s["load_ext"] for s in samples)
    first = statistics.median(s["first_ls"] for s in samples)
    heavy = sorted({m for s in samples for m in s["heavy"]})
    shutil.rmtree(home, ignore_errors=True)
    print(f"import IPython (baseline)   median {base * 1000:7.1f} ms  over {runs} fresh processes")
    print(f"%load_ext nbmodelpack       median {ours * 1000:7.1f} ms  (max {max(s['load_ext'] for s in samples) * 1000:.1f} ms)")
    print(f"first %modelpack ls         median {first * 1000:7.1f} ms  (loads the verbs and the store; paid once, on first use)")
    print(f"ratio load_ext / import IPython: {ours / base:.2f}x; goal < {GOAL_SECONDS * 1000:.0f} ms: {'met' if ours < GOAL_SECONDS else 'MISSED'}")
    print(f"heavy modules imported by load_ext: {', '.join(heavy) or 'none'}")
    return 0 if ours < GOAL_SECONDS and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
