"""`python -m dynakv.sim`: one run prints `trace <hash>`; a sweep ends with
`seeds=K failed=F` and the replay command of each failing seed; the exit status
says whether every checker passed."""

from __future__ import annotations

import pytest

from dynakv.sim.__main__ import main


def test_one_run_prints_a_summary_and_the_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "4", "--faults", "lossy", "--duration-ms", "1000"]) == 0
    out = capsys.readouterr().out
    assert "ops attempted=" in out and "check acknowledged-writes: ok" in out
    assert out.splitlines()[-1].startswith("trace ") and len(out.splitlines()[-1]) == 70


def test_a_sweep_ends_with_its_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sweep", "3", "--start-seed", "40", "--duration-ms", "1000"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "seeds=3 failed=0"
    assert "seed 40 " in out and "seed 42 " in out


def test_a_failing_sweep_lists_the_replay_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sweep", "1", "--start-seed", "3", "--faults", "none", "--lww",
                 "--duration-ms", "2500"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "seeds=1 failed=1"
    assert ("replay: python -m dynakv.sim --seed 3 --nodes 5 --duration-ms 2500 "
            "--faults none --clients 6 --lww") in out


def test_unknown_fault_mix_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault mix"):
        main(["--faults", "earthquake"])


def test_convergence_is_on_by_default_and_can_be_switched_off(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "4", "--faults", "none", "--duration-ms", "800"]) == 0
    assert "check convergence: ok" in capsys.readouterr().out
    assert main(["--seed", "4", "--faults", "none", "--duration-ms", "800",
                 "--no-check-convergence", "--lww"]) == 1
    out = capsys.readouterr().out
    assert "check convergence: off" in out
    assert "--lww --no-check-convergence" in out  # the replay keeps it off
