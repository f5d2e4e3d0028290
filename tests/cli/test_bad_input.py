"""Malformed inputs end in one clear line (exit 2), with nothing written or lost; a diverging
run keeps its last good checkpoint; one writer per run directory; a start killed early resumes.

The cases are the table of ``scripts/probe_inputs.py`` (which also runs them through a
subprocess and prints the totals); here each runs in-process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "probe_inputs.py"
_spec = importlib.util.spec_from_file_location("probe_inputs", _SCRIPT)
probe = importlib.util.module_from_spec(_spec)
sys.modules["probe_inputs"] = probe
_spec.loader.exec_module(probe)


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory) -> dict[str, Path]:
    return probe.train_fixtures(tmp_path_factory.mktemp("probe") / "fixtures")


@pytest.mark.parametrize("case", probe.CASES, ids=[c.name for c in probe.CASES])
def test_a_bad_input_is_one_clear_line(case, probe_runs, tmp_path):
    result = probe.check_case(case, tmp_path, probe_runs)
    assert result["code"] == 2, result
    assert result["one_line"] and not result["traceback"], result
    assert not result["missing_words"], result
    assert not result["lost"] and not result["written"], result
    assert not result["nonfinite_outputs"], result


def test_a_diverging_run_keeps_its_last_good_checkpoint(tmp_path):
    """Training to step 10 at a sane rate, then on at lr 1e12: the run stops with a one-line
    message naming the step, step 10's finite checkpoint stays, and resuming from it works."""
    result = probe.probe_divergence(tmp_path, subprocess_mode=False)
    assert result["ok"], result
    assert "at step 1" in result["message"] and "(step 10) is intact" in result["message"]


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    result = probe.probe_two_writers(tmp_path)
    assert result["ok"], result
    assert "is being trained by another process (pid" in result["message"]


def test_a_start_killed_after_its_config_resumes(tmp_path):
    result = probe.probe_killed_early(tmp_path)
    assert result["ok"], result
