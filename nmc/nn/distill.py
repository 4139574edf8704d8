"""Knowledge distillation: a student learns a teacher's output distribution.

    L = α · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + (1 − α) · CE(z_s, y)

with student logits z_s, teacher logits z_t (no gradient), temperature T and
weight α (Hinton, Vinyals & Dean 2015). The T² factor keeps the soft term's
gradient the same size as the hard term's when T changes. KL is averaged over
every position (all leading dimensions), as cross-entropy is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      targets: torch.Tensor | None = None, *, temperature: float = 2.0,
                      alpha: float = 0.5) -> torch.Tensor:
    """α·T²·KL(teacher ‖ student) at temperature T, plus (1−α)·cross-entropy with ``targets``.

    ``student_logits``/``teacher_logits``: (..., classes); ``targets``: (...) class indices
    (required when α < 1). The teacher's logits are detached.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    c = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, c) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.detach().reshape(-1, c) / temperature, dim=-1)
    soft = F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2
    if alpha == 1.0:
        return soft
    if targets is None:
        raise ValueError("targets are required when alpha < 1 (the hard cross-entropy term)")
    hard = F.cross_entropy(student_logits.reshape(-1, c), targets.reshape(-1))
    return alpha * soft + (1.0 - alpha) * hard
