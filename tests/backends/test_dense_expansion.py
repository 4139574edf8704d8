"""Lowering composes linear chains into dense (source × target) blocks; a block too large to
build is a design-rule error naming the node and the size, not an allocation failure."""
from __future__ import annotations

import pytest

import nmc
from nets import conv_pool
from nmc.backends import linear
from nmc.errors import DesignRuleError


@pytest.mark.parametrize("target", ["loihi2", "brainscales2"])
def test_too_large_expansion_is_a_design_rule_error(monkeypatch, target):
    g = conv_pool(2, 8, 4, 3)
    nmc.compile(g, target=target, dt=1e-3, reset="zero", integrator="euler")  # fits under the real budget
    monkeypatch.setattr(linear, "MAX_DENSE_BYTES", 1024)
    with pytest.raises(DesignRuleError) as e:
        nmc.compile(conv_pool(2, 8, 4, 3), target=target, dt=1e-3, reset="zero", integrator="euler")
    v = e.value.violations[0]
    assert v.rule == "dense-expansion" and v.node == "conv" and "smaller" in v.hint
