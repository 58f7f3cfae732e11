"""TSDS's probability assignment (Liu et al., NeurIPS 2024), free of models and I/O.

Query examples q_1..q_M (the validation set) and candidates x_1..x_N. Each query keeps
its K nearest candidates (distances ``d[j, k]`` sorted ascending, candidate ids
``nbr[j, k]``), and every candidate has a kernel density estimate ``rho >= 1`` (itself
counted). The transport plan gamma (M × K, gamma >= 0, each row summing to 1/M) solves

    min  alpha / C · sum_jk gamma_jk d_jk  +  (1 - alpha) · M · max_jk rho_jk gamma_jk

(optimal-transport alignment to the query distribution, plus the KDE-weighted
diversity regulariser G_KDE), and the selection probability of a candidate is the mass
it receives, p_i = sum over (j, k) with nbr[j, k] = i of gamma_jk. With rho = 1 the
regulariser is G_inf (KNN-Uniform).

For a cap u = M · max rho·gamma, each query's cheapest plan fills its neighbours in
order, u / (M rho_jk) each, until its 1/M is spent. The objective is convex and
piecewise linear in 1/u = s; :func:`transport_plan` walks its breakpoints (the
cumulative sums of 1/rho along each query's list, in increasing order, as the
reference implementation's heap does) and stops where the marginal transport cost
alpha/C · Σ_j (d_{j,k+1} A_jk - B_jk) reaches the marginal regulariser (1 - alpha) · M.
"""

from __future__ import annotations

import numpy as np
import torch


def kernel_density(points: torch.Tensor, sigma: float, k: int, block: int = 1024) -> torch.Tensor:
    """TSDS's KDE: Σ over each point's ``k`` nearest points (itself included) of max(0, 1 - d²/σ²).

    ``sigma == 0`` gives 1 for every point (no density correction: KNN-Uniform).
    """
    n = points.shape[0]
    if sigma == 0:
        return torch.ones(n, dtype=torch.float64)
    x = points.to(torch.float64)
    k = min(k, n)
    out = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, block):  # (block × n) distances at a time
        d2 = torch.cdist(x[start : start + block], x).square()
        near = torch.topk(d2, k, dim=1, largest=False).values
        out[start : start + block] = (1.0 - near / sigma**2).clamp_min(0.0).sum(dim=1)
    return out


def transport_plan(dists: torch.Tensor, rho: torch.Tensor, alpha: float, c: float) -> torch.Tensor:
    """The optimal gamma (M × K) for sorted neighbour distances ``dists`` and densities ``rho``.

    Args:
        dists: ``(M, K)`` distance of each query's k-th nearest candidate, ascending along k; K >= 2.
        rho: ``(M, K)`` kernel density of that candidate (>= 1 where a point counts itself).
        alpha: Trade-off in [0, 1]: 1 is pure distribution alignment, 0 pure diversity.
        c: The constant C that puts distances on the regulariser's scale.

    Returns:
        ``(M, K)`` fp64 plan, every row summing to 1/M.
    """
    d = dists.to(torch.float64).numpy()
    inv = 1.0 / rho.to(torch.float64).numpy()
    m, k = d.shape
    if k < 2:
        raise ValueError(f"TSDS needs at least 2 neighbours per query, got {k}.")
    a = np.cumsum(inv, axis=1)  # A_jk: count of the active set {0..k}
    b = np.cumsum(d * inv, axis=1)  # B_jk: distance-weighted count
    # Breakpoints k = 0..K-2: at s = A_jk query j's active set becomes {0..k}; its marginal cost
    # changes from the previous breakpoint's value to d_{j,k+1} A_jk - B_jk.
    new = d[:, 1:] * a[:, :-1] - b[:, :-1]
    old = np.concatenate([np.zeros((m, 1)), new[:, :-1]], axis=1)
    counts = a[:, :-1]
    jj, kk = np.meshgrid(np.arange(m), np.arange(k - 1), indexing="ij")
    order = np.lexsort((jj.ravel(), kk.ravel(), counts.ravel()))  # heap order: (count, k, j)
    # Past s_max the query whose K neighbours are all full fixes the max: s never exceeds it.
    s_max = float(a[:, -1].min())
    order = order[counts.ravel()[order] <= s_max]
    total = np.cumsum((new - old).ravel()[order])
    stop = np.nonzero(alpha / c * total >= (1.0 - alpha) * m)[0]
    last_k = np.zeros(m, dtype=np.int64)
    if len(stop):
        pos = int(stop[0])
        s = counts.ravel()[order][pos]
        done = order[:pos]
    else:
        s = s_max
        done = order
    np.maximum.at(last_k, jj.ravel()[done], kk.ravel()[done])
    # Fill each query's neighbours 0..last_k with the cap 1/(M s rho), the rest to last_k + 1.
    cap = inv / (m * s)
    active = np.arange(k)[None, :] <= last_k[:, None]
    cap = np.where(active, cap, 0.0)
    before = np.cumsum(cap, axis=1) - cap
    gamma = np.clip(1.0 / m - before, 0.0, cap)
    rest = np.clip(1.0 / m - gamma.sum(axis=1), 0.0, None)
    gamma[np.arange(m), last_k + 1] += rest
    return torch.from_numpy(gamma)


def objective(gamma: torch.Tensor, dists: torch.Tensor, rho: torch.Tensor, alpha: float, c: float) -> float:
    """TSDS's objective alpha/C · <gamma, d> + (1 - alpha) · M · max rho·gamma."""
    g, d, r = gamma.double(), dists.double(), rho.double()
    m = g.shape[0]
    return float(alpha / c * (g * d).sum() + (1 - alpha) * m * (r * g).max())


def candidate_probabilities(
    gamma: torch.Tensor, neighbours: torch.Tensor, num_candidates: int
) -> torch.Tensor:
    """p_i = Σ of gamma over the (query, rank) pairs whose neighbour is candidate i; sums to 1."""
    p = torch.zeros(num_candidates, dtype=torch.float64)
    p.index_add_(0, neighbours.reshape(-1).long(), gamma.reshape(-1).double())
    return p
