"""The course run (solo_lib.course) and the plots of a run (solo_lib.viz): notebook 04's tools."""

import matplotlib.pyplot as plt
import pytest
import pytorch_lightning as pl
import torch

from solo_lib import course, reference
from solo_lib.course import learning_rate_schedule, read_metrics
from solo_lib.data import SOLODataModule
from solo_lib.module import LitSOLO
from solo_lib.viz import plot_learning_rate, plot_training_curves, plot_validation_ap

# A LitSOLO metrics.csv as CSVLogger writes it: 2 epochs of 3 steps, learning-rate rows
# without an epoch, step rows, then validation and epoch means at each epoch's last step.
HEADER = (
    "epoch,step,train/dice_epoch,train/dice_step,train/focal_epoch,train/focal_step,"
    "train/loss_epoch,train/loss_step,val/AP,val/AP50,val/AP75,val/AP_animal,"
    "val/AP_person,val/AP_vehicle,val/dice,val/focal,val/loss,warmup/pg1"
)


def _row(epoch="", step=0, **values) -> str:
    cells = {"epoch": epoch, "step": step} | values
    return ",".join(str(cells.get(name, "")) for name in HEADER.split(","))


def _csv(epochs: int, steps_per_epoch: int = 3) -> str:
    rows = [HEADER]
    for epoch in range(epochs):
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            rows.append(_row(step=step, **{"warmup/pg1": 0.01}))
            rows.append(
                _row(
                    epoch,
                    step,
                    **{
                        "train/loss_step": 4.0 - step / 10,
                        "train/focal_step": 1.0 - step / 100,
                        "train/dice_step": 1.0 - step / 30,
                    },
                )
            )
        last = (epoch + 1) * steps_per_epoch - 1
        rows.append(
            _row(
                epoch,
                last,
                **{
                    "val/loss": 3.5 - epoch,
                    "val/focal": 0.9,
                    "val/dice": 0.8 - epoch / 10,
                    "val/AP": 0.1 * (epoch + 1),
                    "val/AP50": 0.2 * (epoch + 1),
                    "val/AP75": 0.05 * (epoch + 1),
                    "val/AP_vehicle": 0.3,
                    "val/AP_person": 0.2,
                    "val/AP_animal": 0.1,
                },
            )
        )
        rows.append(
            _row(
                epoch,
                last,
                **{
                    "train/loss_epoch": 3.9 - epoch,
                    "train/focal_epoch": 1.0,
                    "train/dice_epoch": 0.9,
                },
            )
        )
    return "\n".join(rows) + "\n"


@pytest.fixture
def two_epochs(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(_csv(epochs=2))
    return read_metrics(path)


@pytest.fixture
def one_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(_csv(epochs=1))
    return read_metrics(path)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_read_metrics_parses_series_and_skips_empty_cells(two_epochs):
    assert two_epochs["train/loss_step"][:2] == [(0, 0, 4.0), (0, 1, pytest.approx(3.9))]
    assert len(two_epochs["train/loss_step"]) == 6
    assert two_epochs["train/loss_epoch"] == [(0, 2, 3.9), (1, 5, pytest.approx(2.9))]
    assert two_epochs["val/AP"] == [(0, 2, 0.1), (1, 5, 0.2)]
    # Learning-rate rows carry no epoch: read as epoch -1.
    assert two_epochs["warmup/pg1"][0] == (-1, 0, 0.01)
    assert "epoch" not in two_epochs and "step" not in two_epochs


def _lines(ax):
    return [(line.get_label(), list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines]


def test_training_curves_draw_train_per_step_and_epoch_and_validation(two_epochs):
    fig = plot_training_curves(two_epochs)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "total loss",
        "focal loss (category)",
        "dice loss (mask)",
    ]
    (step_label, step_x, step_y), (epoch_label, epoch_x, epoch_y), _ = _lines(axes[0])
    assert (step_label, epoch_label) == ("train, per step", "train, epoch mean")
    # x counts epochs trained: step s of 3 per epoch ends at (s + 1) / 3.
    assert step_x == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert step_y == pytest.approx([4.0, 3.9, 3.8, 3.7, 3.6, 3.5])
    assert epoch_x == pytest.approx([1, 2]) and epoch_y == pytest.approx([3.9, 2.9])
    assert axes[0].lines[1].get_linewidth() > axes[0].lines[0].get_linewidth()
    # Validation on the same axes as training, at the same epochs.
    (val_label, val_x, val_y) = _lines(axes[2])[-1]
    assert val_label == "validation"
    assert val_x == pytest.approx([1, 2]) and val_y == pytest.approx([0.8, 0.7])


def test_one_epoch_run_draws_single_points_as_markers(one_epoch):
    fig = plot_training_curves(one_epoch)
    per_step, per_epoch, validation = fig.axes[1].lines
    assert len(per_step.get_xdata()) == 3
    assert list(per_epoch.get_xdata()) == [1.0] and per_epoch.get_marker() == "o"
    assert list(validation.get_ydata()) == [0.9] and validation.get_marker() == "o"


def test_training_curves_reject_metrics_without_losses():
    with pytest.raises(ValueError, match="train/loss_step"):
        plot_training_curves({"val/AP": [(0, 3, 0.5)]})


def test_validation_ap_draws_overall_and_per_class_ap(two_epochs, one_epoch):
    ax_all, ax_class = plot_validation_ap(two_epochs).axes
    assert ax_all.get_title() == "validation mask AP"
    assert ax_class.get_title() == "validation mask AP per class"
    assert [label for label, _, _ in _lines(ax_all)] == ["AP", "AP50", "AP75"]
    assert _lines(ax_all)[1][1:] == ([1, 2], [0.2, 0.4])
    # Classes in the order of their labels, as everywhere in the course.
    assert [label for label, _, _ in _lines(ax_class)] == ["vehicle", "person", "animal"]
    vehicle = next(line for line in ax_class.lines if line.get_label() == "vehicle")
    assert vehicle.get_color() == (0.12, 0.47, 0.90)  # the course colour of class 1
    [single, *_] = plot_validation_ap(one_epoch).axes[0].lines
    assert list(single.get_xdata()) == [1] and single.get_marker() == "o"


def test_validation_ap_without_ap_names_the_metric():
    with pytest.raises(ValueError, match="val/AP"):
        plot_validation_ap({"train/loss_step": [(0, 0, 1.0)]})


class _RecordLearningRate(pl.Callback):
    def __init__(self) -> None:
        self.per_step: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.per_step.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_learning_rate_schedule_is_the_one_lightning_runs(tiny_config, tiny_data_dir):
    cfg = tiny_config.replace(warmup_iters=2, max_epochs=3, lr_milestones=(1, 2))
    record = _RecordLearningRate()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=cfg.max_epochs,
        limit_train_batches=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(LitSOLO(cfg), datamodule=SOLODataModule(cfg, root=str(tiny_data_dir)))

    epochs, lrs = learning_rate_schedule(cfg, steps_per_epoch=3)
    assert lrs == pytest.approx(record.per_step, rel=1e-12)
    assert epochs == pytest.approx([e + s / 3 for e in range(3) for s in range(3)])
    lr = cfg.learning_rate(cfg.batch_size)
    assert lrs[0] == pytest.approx(lr * cfg.warmup_ratio)
    assert lrs[0] < lrs[1] < lrs[2]  # warm-up over 2 steps, then the full rate
    assert lrs[2] == pytest.approx(lr)
    assert lrs[3:6] == pytest.approx([lr * 0.1] * 3)  # epoch 1: first milestone
    assert lrs[6:9] == pytest.approx([lr * 0.01] * 3)  # epoch 2: second milestone


def test_plot_learning_rate_marks_the_milestones(tiny_config):
    epochs, lrs = learning_rate_schedule(tiny_config, steps_per_epoch=3)
    ax_all, ax_warm = plot_learning_rate(epochs, lrs, tiny_config.lr_milestones).axes
    schedule, *milestones = ax_all.lines
    assert list(schedule.get_ydata()) == lrs and ax_all.get_yscale() == "log"
    assert [line.get_xdata()[0] for line in milestones] == [2, 3]
    # The zoom ends at twice the end of the warm-up (step 2, epoch 2/3).
    assert max(ax_warm.lines[0].get_xdata()) <= 4 / 3 < max(epochs)
    with pytest.raises(ValueError, match="equally long"):
        plot_learning_rate([0.0, 0.5], [0.1], [1])


def _tiny_args(tiny_config, tiny_data_dir) -> list[str]:
    """Command-line overrides that shrink the main job to the tiny test configuration."""
    return [
        "--data.root",
        str(tiny_data_dir),
        "--model.config.image_size",
        str(list(tiny_config.image_size)),
        "--model.config.num_grids",
        str(list(tiny_config.num_grids)),
        "--model.config.fpn_channels",
        "32",
        "--model.config.head_channels",
        "32",
        "--model.config.num_stacked_convs",
        "1",
        "--model.config.batch_size",
        "2",
    ]


def test_main_job_in_process_writes_a_run_that_load_main_model_loads(
    tmp_path, monkeypatch, tiny_config, tiny_data_dir
):
    monkeypatch.setattr(course, "RUNS_DIR", tmp_path)
    monkeypatch.setattr(course, "FAST_STEPS", 2)
    run = course.train_main_job(fast=True, extra_args=_tiny_args(tiny_config, tiny_data_dir))
    assert run == tmp_path / "cpu_fast" / "version_0"
    metrics = read_metrics(run / "metrics.csv")
    assert [step for _, step, _ in metrics["train/loss_step"]] == [0, 1]
    assert len(metrics["val/AP"]) == 1

    model, path = course.load_main_model(fast=True)
    assert path.parent == run / "checkpoints" and path.name.startswith("best")
    assert not model.training and model.cfg.image_size == tiny_config.image_size
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    # A second run is newer: the notebooks follow it.
    second = course.train_main_job(fast=True, extra_args=_tiny_args(tiny_config, tiny_data_dir))
    assert second.name == "version_1" and course.newest_run(fast=True) == second


def test_before_the_learner_trains_a_job_the_notebooks_get_its_reference_run(
    tmp_path, monkeypatch, tiny_config, tiny_data_dir
):
    """No run of the learner's: the reference run; once there is one: the learner's."""
    monkeypatch.setattr(course, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(course, "REFERENCE_DIR", tmp_path / "reference")
    monkeypatch.setattr(course, "FAST_STEPS", 2)
    trained = course.train_main_job(fast=True, extra_args=_tiny_args(tiny_config, tiny_data_dir))
    record = reference.publish(trained, tmp_path / "reference" / "cpu", "the command", "here")

    # Learner mode, no runs/cpu: the reference run, not an error and not a training.
    monkeypatch.setattr(course, "train_job", lambda *a, **k: pytest.fail("trained a model"))
    model, path = course.load_job_model(course.MAIN_JOB, fast=False)
    run = course.job_run(course.MAIN_JOB, fast=False)
    assert path.parents[1] == run == tmp_path / "reference" / "cpu"
    assert course.is_reference(run) and "reference run" in course.describe_run(run)
    # Its checkpoint is the run's best, weights alone: the same network, no optimiser.
    best = torch.load(course.best_checkpoint(trained), map_location="cpu", weights_only=True)
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer_states" in best and "optimizer_states" not in stored
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in model.state_dict().items())
    assert path.name == course.best_checkpoint(trained).name == record["checkpoint"]
    assert record["epochs"] == 1 and record["subset"]["batches"] == reference.SUBSET_BATCHES

    # The learner's own run (fast mode's folder here) comes first.
    assert course.job_run(course.MAIN_JOB, fast=True) == trained
    assert not course.is_reference(trained) and "your run" in course.describe_run(trained)


@pytest.mark.parametrize("job", course.JOBS, ids=lambda job: job.name)
def test_without_a_run_learner_mode_names_the_command_and_trains_nothing(
    tmp_path, monkeypatch, job
):
    monkeypatch.setattr(course, "RUNS_DIR", tmp_path)
    monkeypatch.setattr(course, "REFERENCE_DIR", tmp_path / "reference")  # none shipped

    def _no_training(*args, **kwargs):
        raise AssertionError("load_job_model trained a model in learner mode")

    monkeypatch.setattr(course, "train_job", _no_training)
    with pytest.raises(course.NoTrainedModel) as info:
        course.load_job_model(job, fast=False)
    message = str(info.value)
    assert job.command in message and str(tmp_path / job.name) in message
    assert f"{job.minutes} minutes" in message
    # only the main job can be trained from notebook 04
    assert ("notebook 04" in message) == (job == course.MAIN_JOB)


@pytest.mark.parametrize("job", course.JOBS, ids=lambda job: job.name)
def test_a_job_looks_for_its_runs_where_its_preset_writes_them(job):
    """The preset's logger name is the job's folder: otherwise a notebook would not find
    the model that README's command trained."""
    import yaml

    logger = yaml.safe_load(job.config.read_text())["trainer"]["logger"]["init_args"]
    assert course.runs_root(fast=False, job=job) == course.RUNS_DIR / logger["name"]
    assert course.runs_root(fast=True, job=job).name == f"{logger['name']}_fast"
    assert job.command == f"python -m solo_lib fit --config solo_lib/configs/{job.config.name}"


def test_training_log_has_one_line_per_epoch_with_its_ap(two_epochs):
    two_epochs["time/minutes"] = [(0, 2, 1.25), (1, 5, 2.5)]
    header, first, second = course.format_training_log(two_epochs).splitlines()
    assert header.split() == "epoch minutes train loss val loss AP AP50 AP75".split()
    # the _csv fixture: train loss 3.9 - epoch, val loss 3.5 - epoch, AP 0.1 (epoch + 1)
    assert first.split() == ["0", "1.2", "3.900", "3.500", "0.100", "0.200", "0.050"]
    assert second.split() == ["1", "2.5", "2.900", "2.500", "0.200", "0.400", "0.100"]
    del two_epochs["val/AP75"]
    assert course.format_training_log(two_epochs).splitlines()[1].split()[-1] == "-"
