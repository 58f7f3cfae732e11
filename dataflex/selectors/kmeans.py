"""Seeded, deterministic k-means (k-means++ seeding, then Lloyd's iterations) in float64 numpy.

Every rank holds the same gathered embeddings and the same seed, so every rank computes
the same clustering: the seeding draws from a ``numpy`` generator, assignments break
ties towards the lower cluster id (``argmin``), and an empty cluster is re-seeded with
the point farthest from its centroid (ties: lower position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Clustering:
    """A k-means result.

    Attributes:
        centroids: ``(k, d)`` cluster means.
        labels: ``(N,)`` cluster id of each point.
        inertia: Sum of squared distances of the points to their centroids.
        iterations: Lloyd iterations run.
    """

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    iterations: int


def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(N, k)`` squared Euclidean distances, clipped at 0."""
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, 2007): ``(k, d)`` initial centroids."""
    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    closest = squared_distances(x, x[chosen])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total > 0:
            nxt = int(rng.choice(n, p=closest / total))
        else:  # every point coincides with a chosen one: draw among the points not yet chosen
            rest = np.setdiff1d(np.arange(n), chosen)
            nxt = int(rng.choice(rest))
        chosen.append(nxt)
        closest = np.minimum(closest, squared_distances(x, x[[nxt]])[:, 0])
    return x[chosen].copy()


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, max_iter: int = 100) -> Clustering:
    """Cluster the rows of ``x`` into ``k`` groups.

    Raises:
        ValueError: if ``k`` is not in ``[1, len(x)]``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= {n} points, got k={k}.")
    centroids = kmeans_plus_plus(x, k, rng)
    labels = np.full(n, -1, dtype=np.int64)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        d2 = squared_distances(x, centroids)
        new = d2.argmin(axis=1)
        for c in range(k):  # keep every cluster non-empty
            if not (new == c).any():
                far = int(d2[np.arange(n), new].argmax())
                new[far] = c
                d2[far] = 0.0
        if (new == labels).all():
            break
        labels = new
        for c in range(k):
            centroids[c] = x[labels == c].mean(axis=0)
    inertia = float(squared_distances(x, centroids)[np.arange(n), labels].sum())
    return Clustering(centroids, labels, inertia, iterations)
