"""environment.yml and pyproject.toml name the same dependencies and versions; README's commands match CI."""

import re

import tomllib
import yaml

from solo_lib.paths import REPO_ROOT


def _normalise(requirement: str) -> str:
    """The requirement with its name lower-cased and spaces removed, versions kept."""
    name, rest = re.match(r"([A-Za-z0-9_.-]+)(.*)", requirement.strip()).groups()
    return name.lower().replace("_", "-") + rest.replace(" ", "")


def test_environment_yml_and_pyproject_name_the_same_dependencies():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normalise(r) for r in project["dependencies"]}
    declared |= {_normalise(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_normalise(r) for r in pip_section if not r.startswith("-e")}
    assert listed == declared
    assert "-e ." in pip_section
    assert "python=3.11" in env["dependencies"]


def test_ci_runs_the_readme_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    for marker in ("setup", "main", "test"):
        assert f"<!-- {marker} -->" in readme, marker
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "readme_command setup" in ci and "readme_command test" in ci
