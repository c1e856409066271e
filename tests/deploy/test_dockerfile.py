"""The container image recipe: stages, user, entrypoint and build context.

No container engine runs here, so the Dockerfile is parsed and its
instructions are checked against what the chart and the operators rely on.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field

from tests.deploy.conftest import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "Dockerfile.dockerignore"
METRICS_PORT = "9464"
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
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", final.base), final.base
    assert all(s.base == final.base for s in stages), "builder and runtime must share the interpreter"


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
    for excluded in (".venv", ".cache", "tests", ".git", "helm", "bridge/__pycache__"):
        assert _ignored(excluded, patterns), f"{excluded} would be sent to the builder"
