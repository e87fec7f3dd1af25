"""Each package's wheel installs alone into an empty venv, and its console script answers --help."""

import subprocess

import pytest

from tests.conftest import REPO

# package -> the llm-lab packages it may pull in: each dependency is explicit, and only these.
DEPENDS = {
    "llm-data": set(),
    "llm-train": {"llm-data"},
    # distillation reuses llm-train's loop settings and sizes; quantized folders are reloaded as llm-eval loads them
    "llm-compress": {"llm-data", "llm-train", "llm-eval"},
    "llm-infer": {"llm-data", "llm-eval"},  # prompt rendering and exact-match scoring come from llm-eval
    "llm-eval": {"llm-data"},
}
PACKAGES = list(DEPENDS)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(["uv", "build", "--all-packages", "--wheel", "--out-dir", str(out), "--quiet"], cwd=REPO, check=True)
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_wheel_installs_alone_and_cli_runs(dist, tmp_path, package):
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "--quiet", str(venv)], check=True)
    wheel = next(dist.glob(f"{package.replace('-', '_')}-*.whl"))
    # --find-links: llm-data (a dependency of the others) comes from the same build, not from PyPI
    subprocess.run(
        [
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "--find-links",
            str(dist),
            str(wheel),
        ],
        check=True,
    )
    proc = subprocess.run([str(venv / "bin" / package), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {package} <command>")
    installed = subprocess.run(
        ["uv", "pip", "list", "--python", str(venv / "bin" / "python")], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split()[0] for line in installed.splitlines()[2:] if line.strip()}
    pulled = {p for p in PACKAGES if p in names} - {package}
    assert pulled == DEPENDS[package], f"{package} pulled in {sorted(pulled)}, expected {sorted(DEPENDS[package])}"


@pytest.mark.parametrize("package", [*PACKAGES, "llm-align"])
def test_every_command_prints_its_help(package, capsys):
    """`<cli> <command> --help` lists the flags of every command (a literal % in a help text once crashed it)."""
    import importlib

    module = importlib.import_module(f"{package.replace('-', '_')}.cli")
    for command in module.COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            module.main([command, "--help"])
        assert exit_.value.code == 0, command
        assert "--config" in capsys.readouterr().out, command
