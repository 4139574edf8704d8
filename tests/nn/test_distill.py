"""nmc.nn.distill: the loss against its definition computed by hand."""
import math

import pytest
import torch

from nmc.nn.distill import distillation_loss


def _kl_by_hand(zs, zt, T):
    tot = 0.0
    for a, b in zip(zs.reshape(-1, zs.shape[-1]).tolist(), zt.reshape(-1, zt.shape[-1]).tolist()):
        ps = [math.exp(v / T) for v in a]
        pt = [math.exp(v / T) for v in b]
        ps = [p / sum(ps) for p in ps]
        pt = [p / sum(pt) for p in pt]
        tot += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    return tot / (zs.numel() // zs.shape[-1])


def test_matches_definition():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(3, 4, 7, generator=g), torch.randn(3, 4, 7, generator=g)
    y = torch.randint(0, 7, (3, 4), generator=g)
    T, a = 3.0, 0.25
    ce = torch.nn.functional.cross_entropy(zs.reshape(-1, 7), y.reshape(-1)).item()
    want = a * T * T * _kl_by_hand(zs, zt, T) + (1 - a) * ce
    # float32 softmax/log over 7 classes: relative error a few ulp (≈1e-6) per term
    assert distillation_loss(zs, zt, y, temperature=T, alpha=a).item() == pytest.approx(want, rel=1e-5)


def test_zero_when_equal_and_teacher_detached():
    z = torch.randn(5, 9, requires_grad=True)
    t = z.detach().clone().requires_grad_(True)
    loss = distillation_loss(z, t, temperature=2.0, alpha=1.0)
    assert abs(loss.item()) < 1e-6
    (loss + z.sum()).backward()
    assert t.grad is None


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(alpha=1.5)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), **kw)


def test_targets_needed_for_hard_term():
    with pytest.raises(ValueError, match="targets"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), alpha=0.5)
