"""Every crafted bundle through the cheap doors: Python API, CLI (in process), the magic.

Why this split: these doors cost milliseconds per call, so every case goes
through every verb of them. The slow doors (a CLI subprocess, ``serve``, REST
jobs, the registry) run one process or server per call; they get a
representative subset (``SLOW_CASES``) in ``test_slow_doors.py``.

The API matrix stays in the fast unit target (``-m "not slow"``); the CLI and
magic matrices repeat it through their doors and are marked ``slow``.

Each case is planted straight into the victim store (as if an older version had
accepted it), so load-time defences are tried even where the fixed pull would
already refuse it. After each door: no sentinel, one error line, good:1 intact
and loading the same weights, nothing outside the store changed.
"""

from __future__ import annotations

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell

import nbmodelpack
from nbmodelpack.errors import ModelPackError

from .craft import LOADS, REFUSE
from .deliver import plant
from .doors import SMALL_CASES, Outcome, api_steps, clean, cli_steps, judge


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "nbmodelpack")
    return sh


def _drive(victim, case, steps) -> list[str]:
    bad = []
    for step, loads_model, leftover in steps:
        outcome = step()
        must_fail = loads_model and case.expect == REFUSE
        must_load = loads_model and case.expect == LOADS
        bad += judge(outcome, must_fail=must_fail, must_load=must_load, leftover=leftover)
        bad += [f"{outcome.op}: {p}" for p in victim.problems()]
        victim.clear_sentinels()
        clean(victim.out)
    return bad


@pytest.mark.parametrize("name", SMALL_CASES)
def test_api_runs_no_payload_and_refuses_in_one_line(victim, cases, name):
    case = cases[name]
    plant(victim.store, case)
    bad = _drive(victim, case, api_steps(case.ref, victim.out, torch.zeros(1, 8)))
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_CASES)
def test_cli_runs_no_payload_and_refuses_in_one_line(victim, cases, name):
    case = cases[name]
    plant(victim.store, case)
    bad = _drive(victim, case, cli_steps(case.ref, victim.out))
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_CASES)
def test_magic_load_runs_no_payload_and_refuses_in_one_line(victim, cases, name, shell, capsys):
    case = cases[name]
    plant(victim.store, case)
    bad = []
    for cell, loads_model in ((f"%modelpack load {case.ref} as hostile_model", True), (f"%modelpack show {case.ref}", False)):
        capsys.readouterr()
        result = shell.run_cell(cell)
        captured = capsys.readouterr()
        outcome = Outcome(cell.split()[1], bool(result.success), captured.out + captured.err)
        bad += judge(outcome, must_fail=loads_model and case.expect == REFUSE, must_load=loads_model and case.expect == LOADS)
        bad += [f"{cell}: {p}" for p in victim.problems()]
        victim.clear_sentinels()
    shell.user_ns.pop("hostile_model", None)
    assert not bad, f"{name} ({case.what}):\n" + "\n".join(bad)


def test_show_describes_what_load_would_do_not_the_summary(victim, cases):
    # architecture.json says os:system; the manifest's summary annotation still says Linear.
    case = cases["class-os-system"]
    plant(victim.store, case)
    try:
        info = nbmodelpack.show(case.ref)
    except ModelPackError as exc:  # refusing to show a bundle load would refuse is fine, in one line
        assert "\n" not in str(exc)
        return
    shown = f"{info.architecture} {info}"
    assert "torch.nn.modules.linear:Linear" not in shown, shown


@pytest.mark.parametrize("ref", [5, None, b"good:1", ["good:1"]])
def test_api_load_of_something_that_is_not_a_reference_is_one_line(victim, ref):
    with pytest.raises(ModelPackError) as err:
        nbmodelpack.load(ref)
    assert "\n" not in str(err.value)
    assert victim.problems() == []
