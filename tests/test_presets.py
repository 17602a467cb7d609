"""The preset YAML files are generated from the Python presets and parse back to them.

`SOLOConfig`'s presets are the one source; solo_lib/configs/*.yaml are written from them
by `python -m solo_lib.presets` (`solo_lib.presets`). A preset changed without the files
rewritten fails here, and the message names the command that rewrites them.
"""

import dataclasses

import pytest

from solo_lib import presets
from solo_lib.cli import SOLOCLI, described_objects
from solo_lib.config import PRESETS, SOLOConfig
from solo_lib.data import SOLODataModule
from solo_lib.module import LitSOLO


def test_committed_files_are_what_the_presets_generate():
    stale = presets.stale_files()
    assert not stale, (
        f"solo_lib/configs/ is out of step with SOLOConfig's presets: {stale}; run "
        f"`{presets.COMMAND}` and commit the files"
    )


def test_every_preset_has_its_file_settings_and_no_other():
    assert set(presets.PRESET_FILES) == set(PRESETS)


def test_a_changed_preset_or_a_stray_file_is_named(tmp_path, monkeypatch, capsys):
    """The check above fails on the bug it guards: a preset edited, its files not rewritten."""
    assert {p.stem for p in presets.write_files(tmp_path)} == set(PRESETS)
    assert presets.stale_files(tmp_path) == []
    assert presets.write_files(tmp_path) == []  # nothing to rewrite

    cpu = SOLOConfig.cpu
    monkeypatch.setattr(SOLOConfig, "cpu", classmethod(lambda cls: cpu().replace(seed=1)))
    (tmp_path / "old.yaml").write_text("model: {}\n")
    # the presets built on the cpu preset change with it
    derived = ("cpu", "dense", "solov2_cpu", "gpu")
    assert presets.stale_files(tmp_path) == [
        *(f"{name}.yaml (not what SOLOConfig.{name}() generates)" for name in derived),
        "old.yaml (no preset of that name)",
    ]
    monkeypatch.setattr(presets, "CONFIG_DIR", tmp_path)
    assert presets.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert presets.COMMAND in err and "cpu.yaml (not what SOLOConfig.cpu() generates)" in err
    (tmp_path / "old.yaml").unlink()
    assert presets.main([]) == 0
    assert "seed: 1\n" in (tmp_path / "cpu.yaml").read_text()


class _ParsedOnly(SOLOCLI):
    """The command line's ``fit`` up to its first object: the `SOLOConfig` that it builds
    from the parsed options (`described_objects`), and no network, trainer or data."""

    def instantiate_classes(self) -> None:
        self.parsed_config, _ = described_objects(self.config[self.subcommand])

    def _run_subcommand(self, subcommand: str) -> None:
        pass


@pytest.mark.parametrize("name", PRESETS)
def test_the_command_line_parses_each_file_to_its_preset(name):
    path = presets.CONFIG_DIR / f"{name}.yaml"
    cli = _ParsedOnly(LitSOLO, SOLODataModule, args=["fit", "--config", str(path)])
    parsed, preset = (
        dataclasses.asdict(cli.parsed_config),
        dataclasses.asdict(SOLOConfig.preset(name)),
    )
    differ = {
        field: (parsed[field], value) for field, value in preset.items() if parsed[field] != value
    }
    assert not differ, (
        f"{path.name} parses to other values than SOLOConfig.{name}() (field: (file, preset)): "
        f"{differ}; run `{presets.COMMAND}`"
    )
    trainer = cli.config["fit"]["trainer"]
    assert trainer["logger"]["init_args"]["name"] == name  # runs/<preset>
    assert trainer["max_epochs"] == (cli.parsed_config.max_epochs or -1)  # linked; -1: no cap
