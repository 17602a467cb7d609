"""The course's reference runs (reference/<job>): their weights still score what their
record says, so a change to the model, the geometry or post-processing that changes
what they predict fails here; and the record is the run's own."""

import pytest
import torch

from solo_lib import course, reference
from solo_lib.config import fast_mode
from solo_lib.course import read_metrics

REFERENCE_JOBS = [job for job in course.JOBS if course.reference_run(job) is not None]


def test_the_main_job_has_a_reference_run():
    """Notebooks 04 and 05 open with a trained model (issue 28)."""
    assert course.MAIN_JOB in REFERENCE_JOBS


@pytest.mark.parametrize("job", REFERENCE_JOBS, ids=lambda job: job.name)
def test_reference_weights_score_what_their_record_says(job):
    """Fast mode: the validation split's first batches; otherwise all of it (to 1e-3)."""
    run = course.reference_run(job)
    recorded = reference.read_record(run)["subset" if fast_mode() else "validation"]
    scores = reference.score(reference.weights_of(run), recorded["batches"])
    for name in reference.METRICS:
        assert scores[name] == pytest.approx(recorded[name], abs=1e-3), name


@pytest.mark.parametrize("job", REFERENCE_JOBS, ids=lambda job: job.name)
def test_a_reference_record_is_its_runs_own(job):
    """The recorded AP is what the run logged at that checkpoint's epoch (trained in
    bf16-mixed, scored in float32: within 0.01); the weights are small and alone."""
    run = course.reference_run(job)
    record = reference.read_record(run)
    weights = reference.weights_of(run)
    stored = torch.load(weights, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in stored
    assert weights.stat().st_size / 2**20 <= reference.MAX_WEIGHTS_MB
    assert weights.name == record["checkpoint"]

    metrics = read_metrics(run / "metrics.csv")
    epoch = int(weights.stem.rpartition("epoch")[2])
    logged = {
        name: dict((e, v) for e, _, v in metrics[f"val/{name}"]) for name in reference.METRICS
    }
    for name in reference.METRICS:
        assert record["validation"][name] == pytest.approx(logged[name][epoch], abs=0.01), name
    assert record["epochs"] == metrics["time/minutes"][-1][0] + 1
    assert stored["hyper_parameters"]["config"]["name"] == job.name
