"""The ``nmc`` command line's entry module: ``python -m nmc.cli ...`` and ``from nmc.cli import main``.

The commands live in the driver layer, :mod:`nmc.driver.cli`."""
from nmc.driver.cli import main

__all__ = ["main"]
