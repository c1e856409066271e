"""README's "Deploy on Kubernetes" section against values.yaml."""

from __future__ import annotations

import re

import yaml

from tests.deploy.values_doc import README, VALUES, current_readme_table, descriptions, leaf_paths, table


def test_every_value_is_documented_in_values_yaml() -> None:
    """Each leaf of values.yaml has a `# --` description."""
    text = VALUES.read_text()
    docs = descriptions(text)
    missing = [p for p in leaf_paths(yaml.safe_load(text), docs) if p not in docs]
    assert missing == []


def test_readme_table_is_generated_from_values_yaml() -> None:
    """The README table is exactly what `make helm-docs` generates."""
    assert current_readme_table(README.read_text()) == table(), "run `make helm-docs`"


def test_every_value_key_is_in_the_readme_table() -> None:
    """Every key path of values.yaml appears as a row of the README table."""
    rows = set(re.findall(r"^\| `([^`]+)` \|", current_readme_table(README.read_text()), re.MULTILINE))
    text = VALUES.read_text()
    assert set(leaf_paths(yaml.safe_load(text), descriptions(text))) == rows


def test_readme_section_covers_install_secrets_scaling_monitoring() -> None:
    """The section has the parts an operator looks for."""
    readme = README.read_text()
    section = readme.split("## Deploy on Kubernetes", 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.MULTILINE)[0]
    for heading in ("### Install", "### Secrets", "### Scaling", "### Monitoring", "### Values"):
        assert heading in section
    assert "helm upgrade --install presence-bridge helm/presence-bridge" in section
    assert "helm test presence-bridge" in section
