"""Shared pytest fixtures. The network builders and input generators live in
:mod:`nets` (tests/nets.py) so any test can import them directly:
``from nets import ff_lif, spikes, normalized``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nets  # noqa: E402


@pytest.fixture
def ff_nir():
    """Feed-forward LIF nir.NIRGraph (8 → 16 → 4)."""
    return nets.ff_lif()


@pytest.fixture
def rec_nir():
    """Recurrent CubaLIF nir.NIRGraph (6 → 12⟲ → 3)."""
    return nets.recurrent_cubalif()


@pytest.fixture
def conv_nir():
    """Conv/pool nir.NIRGraph, input (2, 8, 8)."""
    return nets.conv_pool()


@pytest.fixture
def egru_nir():
    """EGRU extension-node graph (5 → 7 → 3)."""
    return nets.egru_net()


@pytest.fixture
def ff_file(tmp_path, ff_nir):
    """The feed-forward net written with plain ``nir.write`` (as an exporter would)."""
    import nir

    p = tmp_path / "ff.nir"
    nir.write(p, ff_nir)
    return p


@pytest.fixture
def ff_inputs():
    """Spike input for ``ff_file``/``ff_nir``: {"input": (30, 8)}."""
    return {"input": nets.spikes(8, T=30, p=0.3, seed=1)}


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path_factory, monkeypatch):
    """Keep files nmc writes to the temp dir (e.g. pass-failure reproducers) out of /tmp:
    pytest prunes its own base temp dir between runs."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.getbasetemp()))
