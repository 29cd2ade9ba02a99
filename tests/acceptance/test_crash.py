"""Kill `foxbatch run` (SIGKILL at random moments, and at named crash points), then resume.

Sizes are small in CI; FOXBATCH_FULL_CRASH_TESTS=1 runs the full sizes of the issue
(20+ kills during a 2,000-row job).
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from foxbatch.sim import SimConfig
from foxbatch.sim.server import serve_in_subprocess
from tests.acceptance.crash_harness import Job, check_export, check_invariants

FULL = os.environ.get("FOXBATCH_FULL_CRASH_TESTS") == "1"
FAULTS = SimConfig(seed=7, latency_median=0.2, latency_sigma=0.5, failure_rate=0.05,
                   p429=0.005, p5xx_get=0.05, p5xx_submit_after=0.05, pdrop_submit=0.05)


@pytest.mark.timeout(600 if FULL else 180)
def test_random_sigkills_lose_nothing_and_pay_twice_only_when_reported(tmp_path):
    rows, kills = (2000, 20) if FULL else (300, 6)
    job = Job(tmp_path, rows)
    job.write_input()
    rng = random.Random(11)
    with serve_in_subprocess(FAULTS) as url:
        for _ in range(kills):
            process = job.start(url)
            time.sleep(rng.uniform(0.8, 2.5))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        code, err = job.run_to_end(url)
        assert code == 0, err
        check_invariants(job, url)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point", ["after_claim", "after_post_before_record",
                                   "after_record_before_commit", "mid_group_commit"])
def test_named_crash_points(tmp_path, point):
    job = Job(tmp_path, 60)
    job.write_input()
    with serve_in_subprocess(FAULTS) as url:
        for hit in (1, 2, 3):
            code, err = job.run_to_end(url, crash_at=f"{point}:{hit}")
            assert code == 137, f"{point}:{hit} did not crash: {code} {err}"
        code, err = job.run_to_end(url)
        assert code == 0, err
        check_invariants(job, url)


@pytest.mark.timeout(120)
def test_crash_during_export_leaves_the_old_file_or_none(tmp_path):
    job = Job(tmp_path, 30)
    job.write_input()
    with serve_in_subprocess(SimConfig(seed=3)) as url:
        code, _ = job.run_to_end(url, crash_at="during_export")
        assert code == 137
        assert not job.output.exists()
        code, err = job.run_to_end(url)
        assert code == 0, err
        check_export(job)
        before = job.output.read_text()
        code, _ = job.run_to_end(url, crash_at="during_export")
        assert code == 137
        assert job.output.read_text() == before
