"""Errors in the user's input: one ``error:`` line on stderr, exit code 2, no traceback;
bugs keep theirs, and ``SOLO_TRACEBACK=1`` shows a refusal's (`solo_lib.cli.main`)."""

import os
import subprocess
import sys

import pytest
from run_config import write_config
from test_export import write_checkpoint

from solo_lib.cli import UserInputError, main
from solo_lib.module import LitSOLO
from solo_lib.paths import REPO_ROOT

# main(args) under pytest: sys.argv holds pytest's own arguments, which LightningCLI notes.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def _refusal(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """The one ``error:`` line that `main(args)` prints on stderr, exiting with 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert lines[0].endswith("(set SOLO_TRACEBACK=1 for the traceback)")
    return lines[0]


@pytest.fixture
def config(tmp_path, tiny_config, tiny_data_dir) -> str:
    """A YAML file of the tiny config and data; its runs go to `tmp_path`."""
    return str(write_config(tmp_path, tiny_config, tiny_data_dir))


@pytest.fixture
def checkpoint(tmp_path, tiny_config) -> str:
    """A checkpoint as fit writes it, of an untrained network of the tiny config."""
    return str(write_checkpoint(LitSOLO(tiny_config), tmp_path / "model.ckpt"))


def test_a_config_value_out_of_range_is_named(capsys, config):
    line = _refusal(capsys, ["fit", "--config", config, "--model.config.batch_size=0"])
    assert "error: model.config: batch_size must be at least 1, got 0" in line


def test_data_options_that_contradict_each_other_are_named(capsys, config):
    line = _refusal(capsys, ["fit", "--config", config, "--data.format=coco"])
    assert line.startswith("error: data: ") and "annotation_file" in line


def test_a_missing_data_folder_is_named(capsys, tmp_path, config):
    missing = tmp_path / "missing"
    line = _refusal(capsys, ["fit", "--config", config, f"--data.root={missing}"])
    assert f"error: {missing}" in line


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_running_a_network_needs_a_checkpoint(capsys, config, subcommand):
    """Without --ckpt_path the network is untrained: predict wrote "0 instances" and
    validate an AP of 0, as if they were the model's."""
    line = _refusal(capsys, [subcommand, "--config", config])
    assert f"error: {subcommand} needs --ckpt_path CKPT (a checkpoint written by fit)" in line
    assert ("--onnx FILE" in line) == (subcommand == "predict")


@pytest.mark.parametrize("subcommand", ["validate", "export"])
def test_a_ckpt_path_that_is_not_a_checkpoint_is_named(capsys, tmp_path, config, subcommand):
    """A text file gave ``KeyError: 101`` from the unpickler, after a long traceback."""
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    options = ["--config", config] if subcommand == "validate" else ["--output", "m.onnx"]
    line = _refusal(capsys, [subcommand, *options, "--ckpt_path", str(text)])
    assert f"error: --ckpt_path {text} is not a checkpoint written by fit (" in line


def test_a_missing_ckpt_path_is_named_before_any_data_is_read(capsys, tmp_path, config):
    missing = tmp_path / "missing.ckpt"
    line = _refusal(capsys, ["fit", "--config", config, "--ckpt_path", str(missing)])
    assert f"error: --ckpt_path {missing}: no such file" in line


def test_a_network_field_against_the_checkpoint_is_named(capsys, config, checkpoint):
    args = ["validate", "--config", config, "--ckpt_path", checkpoint]
    line = _refusal(capsys, [*args, "--model.config.num_grids=[6, 5, 4, 3, 2]"])
    assert "--model.config.num_grids (6, 5, 4, 3, 2) conflicts with the checkpoint" in line


def test_solo_traceback_raises_the_refusal_itself(monkeypatch, config):
    monkeypatch.setenv("SOLO_TRACEBACK", "1")
    with pytest.raises(UserInputError, match="batch_size must be at least 1") as raised:
        main(["fit", "--config", config, "--model.config.batch_size=0"])
    assert isinstance(raised.value.__cause__, ValueError)  # SOLOConfig's own check


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path, checkpoint):
    """A ValueError outside the checks of the user's input is a bug: it propagates."""

    def broken_exporter(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr("solo_lib.cli.export_onnx", broken_exporter)
    with pytest.raises(ValueError, match="a bug"):
        main(["export", "--ckpt_path", checkpoint, "--output", str(tmp_path / "m.onnx")])


@pytest.mark.parametrize(
    "subcommand, args, message",
    [
        ("fit", ["--model.config.batch_size", "0"], "error: model.config: batch_size must be"),
        ("validate", ["--ckpt_path", "notes.txt"], "error: --ckpt_path notes.txt is not a"),
    ],
)
def test_the_command_line_prints_no_traceback(tmp_path, subcommand, args, message):
    """``python -m solo_lib`` itself: the message on stderr, exit code 2, no traceback.
    (Run in `tmp_path` without a logger: a run that the refusal missed writes nothing.)"""
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    env.pop("SOLO_TRACEBACK", None)
    config = REPO_ROOT / "solo_lib" / "configs" / "cpu.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "solo_lib", subcommand, "--config", str(config)]
        + ["--trainer.logger=false", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr


def test_classes_other_than_the_built_in_sets_are_named_before_it_is_generated(
    capsys, monkeypatch, config
):
    """The built-in set was generated (about a minute) before its classes were compared
    with the config's, and the mismatch then ended in a traceback."""
    generated = []
    monkeypatch.setattr(
        "solo_lib.data.datamodule.ensure_builtin_dataset", lambda **kw: generated.append(kw)
    )
    args = ["--data.root=null", "--model.config.num_classes=1", "--model.config.class_names=[cell]"]
    line = _refusal(capsys, ["fit", "--config", config, *args])
    assert "the built-in 'objects' set has the classes ['vehicle', 'person', 'animal']" in line
    assert not generated
