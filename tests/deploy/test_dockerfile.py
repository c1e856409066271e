"""The container image recipe: stages, user, entrypoint, build context and supply chain.

No container engine runs here, so the Dockerfile is parsed and its
instructions are checked against what the chart and the operators rely on.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import bridge
from tests.deploy.conftest import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "Dockerfile.dockerignore"
METRICS_PORT = "9464"
LOCK = REPO / "deploy" / "requirements.lock"
BUILD_LOCK = REPO / "deploy" / "build-requirements.lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: SHA-256 of the Apache License 2.0 text as the ASF publishes it
#: (https://www.apache.org/licenses/LICENSE-2.0.txt).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|libc6-dev|python3?-dev|cargo|rustc)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    logical: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda g: args[g.group(1)], m.group(1))
            stages.append(Stage(base=base, name=m.group(2)))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM: {line}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def test_multi_stage_with_builder_and_slim_runtime() -> None:
    """A builder stage builds; the final stage is a slim Python 3.11 image."""
    _, stages = parse()
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    final = stages[-1]
    image = final.base.split("@", 1)[0]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image), final.base
    assert all(s.base == final.base for s in stages), "builder and runtime must share the interpreter"


def test_base_image_is_pinned_by_digest() -> None:
    """Every stage starts from the same image index digest, a named build argument."""
    args, stages = parse()
    assert DIGEST.fullmatch(args["PYTHON_IMAGE_DIGEST"]), args["PYTHON_IMAGE_DIGEST"]
    for stage in stages:
        _image, _, digest = stage.base.partition("@")
        assert digest == args["PYTHON_IMAGE_DIGEST"], f"{stage.name} is not pinned: {stage.base}"


def _labels(stage: Stage) -> dict[str, str]:
    labels: dict[str, str] = {}
    for label in stage.all("LABEL"):
        for pair in shlex.split(label):
            key, _, value = pair.partition("=")
            labels[key] = value
    return labels


def test_oci_labels() -> None:
    """The image carries the OCI annotations, agreeing with pyproject, the package and the chart."""
    _args, stages = parse()
    final = stages[-1]
    labels = _labels(final)
    oci = "org.opencontainers.image."
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert labels.get(oci + key), f"LABEL {oci}{key} missing"
    assert labels[oci + "licenses"] == PYPROJECT["project"]["license"]
    assert labels[oci + "description"] == PYPROJECT["project"]["description"]
    assert labels[oci + "title"] == PYPROJECT["project"]["name"]
    assert labels[oci + "base.name"] == "${PYTHON_IMAGE}"
    assert labels[oci + "base.digest"] == "${PYTHON_IMAGE_DIGEST}"
    stage_args = dict(a.partition("=")[::2] for a in final.all("ARG"))
    assert labels[oci + "version"] == "${VERSION}"
    chart = yaml.safe_load((REPO / "helm" / "presence-bridge" / "Chart.yaml").read_text())
    assert stage_args["VERSION"] == bridge.__version__ == chart["appVersion"]
    assert {"PYTHON_IMAGE", "PYTHON_IMAGE_DIGEST", "REVISION", "CREATED"} <= set(stage_args)


def test_license_file_is_the_licence_pyproject_declares() -> None:
    """LICENSE is the Apache License 2.0 text, byte for byte, as pyproject.toml's licence says."""
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256


# --- locked dependencies ----------------------------------------------------------------


@dataclass
class Pin:
    version: str
    hashes: list[str]
    via: list[str]


def parse_lock(path: Path) -> dict[str, Pin]:
    """pip-compile output: ``name==version`` with ``--hash`` lines and ``# via`` notes."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if m := re.match(r"^([A-Za-z0-9._-]+)==(\S+?)(?:\s*\\)?$", raw):
            current = pins[canonicalize_name(m.group(1))] = Pin(m.group(2), [], [])
            in_via = False
        elif current is not None and line.startswith("--hash="):
            current.hashes.append(line.removeprefix("--hash=").rstrip(" \\"))
        elif current is not None and line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.append(rest)
        elif current is not None and in_via and line.startswith("#   "):
            current.via.append(line.removeprefix("#   ").strip())
        else:
            in_via = False
    return pins


def test_runtime_lock_pins_every_pyproject_dependency_with_hashes() -> None:
    """Each dependency of pyproject.toml is locked at a version it allows; every pin has hashes."""
    pins = parse_lock(LOCK)
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is not in {LOCK.name}: run `make lock`"
        assert req.specifier.contains(pin.version, prereleases=True), f"{req.name}=={pin.version} vs {spec}"
        assert "presence-bridge (pyproject.toml)" in pin.via, f"{req.name} is no longer a direct dependency"
    for name, pin in pins.items():
        assert pin.hashes and all(DIGEST.fullmatch(h) for h in pin.hashes), name


def test_runtime_lock_has_nothing_stale_or_for_development() -> None:
    """Every pin is wanted by pyproject or by another pin; no dev extra reaches the image."""
    pins = parse_lock(LOCK)
    direct = {canonicalize_name(Requirement(s).name) for s in PYPROJECT["project"]["dependencies"]}
    for name, pin in pins.items():
        wanted_by = {v for v in pin.via if v != "presence-bridge (pyproject.toml)"}
        assert name in direct or wanted_by, f"{name} is wanted by nothing"
        assert {canonicalize_name(v) for v in wanted_by} <= set(pins), f"{name}: via {wanted_by}"
    dev = {
        canonicalize_name(Requirement(s).name) for s in PYPROJECT["project"]["optional-dependencies"]["dev"]
    }
    assert not dev & set(pins), dev & set(pins)


def test_build_lock_covers_the_build_system() -> None:
    """The build backend the wheel is built with is locked with hashes too."""
    pins = parse_lock(BUILD_LOCK)
    for spec in PYPROJECT["build-system"]["requires"]:
        req = Requirement(spec)
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is not in {BUILD_LOCK.name}: run `make lock`"
        assert req.specifier.contains(pin.version, prereleases=True), f"{req.name}=={pin.version} vs {spec}"
    assert all(pin.hashes for pin in pins.values())


def test_builder_installs_only_from_the_locks_with_hashes() -> None:
    """pip installs third-party code only with --require-hashes from a lock, wheels only."""
    builder = parse()[1][0]
    installs = [
        cmd.strip()
        for run in builder.all("RUN")
        for cmd in run.split("&&")
        if re.search(r"\bpip (install|wheel)\b", cmd)
    ]
    locked = [c for c in installs if "pip install" in c and "-r deploy/" in c]
    assert {c.rsplit(" ", 1)[-1] for c in locked} == {
        "deploy/requirements.lock",
        "deploy/build-requirements.lock",
    }
    for cmd in installs:
        if cmd in locked:
            assert "--require-hashes" in cmd and "--only-binary=:all:" in cmd and "--no-deps" in cmd, cmd
        elif "pip wheel" in cmd:
            assert "--no-build-isolation" in cmd and "--no-deps" in cmd, "the backend must come from the lock"
        else:
            assert cmd.endswith("--no-deps /dist/*.whl"), f"unlocked install: {cmd}"
    assert any("pip check" in run for run in builder.all("RUN")), "a lock missing a dependency must fail"


def test_final_stage_copies_only_the_virtualenv_from_the_builder() -> None:
    """The runtime stage takes the built virtualenv and nothing from the context."""
    final = parse()[1][-1]
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not final.all("ADD")


def test_no_build_tools_in_the_final_stage() -> None:
    """Nothing in the final stage installs a compiler or headers."""
    final = parse()[1][-1]
    for run in final.all("RUN"):
        assert "pip install" not in run
        assert not BUILD_TOOLS.search(run), run
        assert "apt-get install" not in run


def test_runs_as_a_numeric_non_root_user() -> None:
    """USER is numeric (runAsNonRoot can verify it) and not root."""
    final = parse()[1][-1]
    users = final.all("USER")
    assert users, "final stage sets no USER"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert m, f"USER {users[-1]} is not numeric"
    assert int(m.group(1)) != 0
    assert m.group(2) is None or int(m.group(2)) != 0
    # The chart's default runAsUser matches.
    values = (REPO / "helm" / "presence-bridge" / "values.yaml").read_text()
    assert f"runAsUser: {m.group(1)}" in values


def test_entrypoint_runs_the_worker_and_exposes_the_metrics_port() -> None:
    """`presence-bridge run` in exec form, metrics port exposed."""
    final = parse()[1][-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["presence-bridge"]
    assert json.loads(final.all("CMD")[-1]) == ["run"]
    assert final.all("EXPOSE") == [METRICS_PORT]
    assert any("BRIDGE_METRICS_PORT=${METRICS_PORT}" in env for env in final.all("ENV"))
    assert f"ARG METRICS_PORT={METRICS_PORT}" in DOCKERFILE.read_text()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "presence-bridge" in scripts


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat + "/*"):
            ignored = not negate
    return ignored


def test_dockerignore_lets_in_exactly_what_the_builder_copies() -> None:
    """Every COPY source of the builder survives the ignore file; tests and caches do not."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    builder = parse()[1][0]
    for copy in builder.all("COPY"):
        *sources, _dest = copy.split()
        for src in sources:
            assert (REPO / src).exists(), src
            assert not _ignored(src, patterns), f"{src} is excluded from the build context"
    for excluded in (".venv", ".cache", "tests", ".git", "helm", "bridge/__pycache__", "deploy/Dockerfile"):
        assert _ignored(excluded, patterns), f"{excluded} would be sent to the builder"
