"""Cost of `%load_ext nbmodelpack` in a fresh process, against `import IPython` (goal: < 0.3 s).

Each run is a new interpreter (cold imports, warm OS file cache). Prints the
medians and the ratio of our cost to the IPython baseline, the cost of the
first verb (which loads the store), and checks that loading the extension
imported neither torch nor ipywidgets nor matplotlib.

Then the first load of a small model in a fresh process (after `import torch`): an
export graph (torch imports its export machinery first), a `Sequential` packed as a
module tree (no graph), and the graph in a kernel whose magic warmed that import up
on a background thread after the cell that imported torch.

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


PACK = r"""
import torch, nbmodelpack
from torch import nn

class Net(nn.Module):  # a notebook class: a fresh process gets the export graph
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)

x = torch.randn(2, 1, 28, 28)
nbmodelpack.pack(Net().eval(), "graph", example=x)
nbmodelpack.pack(nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).eval(), "tree", example=x)
"""

FIRST_LOAD = r"""
import json, sys, threading, time
import torch, nbmodelpack
if sys.argv[1] == "warm":
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbmodelpack")
    shell.run_cell("import torch")
    for t in threading.enumerate():  # the kernel sits idle while the magic warms up
        if t.name == "nbmodelpack-warm-up":
            t.join()
t = time.perf_counter()
m = nbmodelpack.load(sys.argv[2])
print(json.dumps({"load": time.perf_counter() - t, "form": m.bundle_form}))
"""


def first_loads(runs: int, env: dict[str, str]) -> None:
    """Median first-load time in fresh processes: graph, module tree, graph after the magic's warm-up."""
    env = {k: v for k, v in env.items() if k != "NBMODELPACK_NO_WARMUP"}
    subprocess.run([sys.executable, "-c", PACK], env=env, check=True, capture_output=True)
    for label, mode, ref in (("export graph, cold", "cold", "graph:1"), ("module tree (Sequential)", "cold", "tree:1"), ("export graph, after warm-up", "warm", "graph:1")):
        got = [json.loads(subprocess.run([sys.executable, "-c", FIRST_LOAD, mode, ref], env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]) for _ in range(runs)]
        print(f"first load, {label:28} median {statistics.median(g['load'] for g in got) * 1000:7.1f} ms  (form {got[0]['form']})")


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
    print(f"import IPython (baseline)   median {base * 1000:7.1f} ms  over {runs} fresh processes")
    print(f"%load_ext nbmodelpack       median {ours * 1000:7.1f} ms  (max {max(s['load_ext'] for s in samples) * 1000:.1f} ms)")
    print(f"first %modelpack ls         median {first * 1000:7.1f} ms  (loads the verbs and the store; paid once, on first use)")
    print(f"ratio load_ext / import IPython: {ours / base:.2f}x; goal < {GOAL_SECONDS * 1000:.0f} ms: {'met' if ours < GOAL_SECONDS else 'MISSED'}")
    print(f"heavy modules imported by load_ext: {', '.join(heavy) or 'none'}")
    first_loads(max(1, runs // 2), env)
    shutil.rmtree(home, ignore_errors=True)
    return 0 if ours < GOAL_SECONDS and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
