"""An independent, slow LESS: one backward per example, the Adam formula by hand, no projection."""

from __future__ import annotations

import torch

from dataflex.data.collator import SFTDataCollator
from tests import adam_reference


def _params(model, names=None) -> list[torch.nn.Parameter]:
    """The trainable parameters (those named in ``names`` when given), in named_parameters order."""
    return [p for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)]


def flat_grad(model, example, names=None) -> torch.Tensor:
    """Gradient of one example's mean completion-token loss, flattened in named_parameters order."""
    params = _params(model, names)
    batch = SFTDataCollator(0)([example])
    loss = model(**batch).loss
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads]).double()


def adam_direction(model, optimizer, g: torch.Tensor, names=None) -> torch.Tensor:
    """Γ = m' / (sqrt(v') + eps) of one Adam step on g alone, from the optimizer's live state."""
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    eps = group["eps"]
    params = _params(model, names)
    m = torch.cat([optimizer.state[p]["exp_avg"].reshape(-1) for p in params]).double()
    v = torch.cat([optimizer.state[p]["exp_avg_sq"].reshape(-1) for p in params]).double()
    return adam_reference.adam_direction(g, m, v, beta1, beta2, eps)


def less_round_scores(model, optimizer, train, val, subtasks=None, transform="adam", names=None):
    """s_i(z) for every train example: max over subtasks of the mean cosine.

    ``names``: only these parameters' gradients (LESS's ``gradient_modules``); None: all trainable.
    """
    model.eval()
    subtasks = subtasks or ["all"] * len(val)
    vfeats = [flat_grad(model, ex, names) for ex in val]
    scores = []
    per = []
    for ex in train:
        g = flat_grad(model, ex, names)
        f = (
            adam_direction(model, optimizer, g, names)
            if transform == "adam"
            else g.sign()
            if transform == "sign"
            else g
        )
        by_task: dict[str, list[float]] = {}
        for t, vf in zip(subtasks, vfeats):
            by_task.setdefault(t, []).append(float(torch.nn.functional.cosine_similarity(f, vf, dim=0)))
        means = {t: sum(c) / len(c) for t, c in by_task.items()}
        per.append(means)
        scores.append(max(means.values()))
    return torch.tensor(scores, dtype=torch.float64), per
