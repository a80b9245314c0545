"""Shared fixtures of the data tests: the default synthetic domains, generated once."""

from __future__ import annotations

import pytest

from dcsd.data import make_synthetic_domains


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Cache folder holding the default synthetic configuration (seed 0)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_domains(root=root)
    return root


@pytest.fixture(scope="session")
def synthetic_domains(synthetic_root):
    return make_synthetic_domains(root=synthetic_root)
