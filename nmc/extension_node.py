"""The base class of nmc's extension nodes (:class:`nmc.nodes.EGRU`, the SSM nodes of :mod:`nmc.nodes_ssm`)."""
from __future__ import annotations

from typing import Any, Dict

import nir


class ExtensionNode(nir.NIRNode):
    """A node type of nmc's own, in a ``nir.NIRGraph`` beside NIR's nodes. ``nmc_type`` is its type
    name in nmc's files (``nmc.<Class>``, its registry entry's name): :meth:`to_dict` writes it as the
    node's ``type`` where NIR would write the bare class name."""

    nmc_type = ""

    def to_dict(self) -> Dict[str, Any]:
        d = super().to_dict()
        d["type"] = self.nmc_type
        return d
