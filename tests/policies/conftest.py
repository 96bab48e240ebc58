"""Fixtures of the policy tests: the shipped bundle, compiled once per session."""

from __future__ import annotations

import pytest

from governance.policy.bundle import PolicyBundle, load_folder
from governance.policy.embedded import EmbeddedEngine


@pytest.fixture(scope="session")
def bundle() -> PolicyBundle:
    return load_folder()


@pytest.fixture(scope="session")
def embedded(bundle: PolicyBundle) -> EmbeddedEngine:
    return EmbeddedEngine(bundle)
