"""Spectral speaker clustering for ``postcall.speakers.diarize``, in numpy only.

``spectral_labels``: spectral clustering of window embeddings with the number of
speakers estimated from the eigengap of a pruned cosine-affinity graph (Park et al.,
"Auto-tuning spectral clustering for speaker diarization using normalized maximum
eigengap", IEEE SPL 2020: NME-SC). Each row of the affinity keeps only its ``p``
strongest neighbours; ``p`` is chosen per recording as the one whose largest eigengap
is largest relative to ``p``, so no similarity threshold is tuned to a dataset.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
SEARCH = 8  # the eigengap is looked for among the first SEARCH (or ``high``) eigenvalues
Labels = npt.NDArray[np.int64]


def cosine_affinity(x: Array) -> npt.NDArray[np.float64]:
    """Cosine similarity of the rows of ``x``, clipped to [0, 1]."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim: npt.NDArray[np.float64] = np.clip((unit @ unit.T).astype(np.float64), 0.0, 1.0)
    return sim


def _pruned(affinity: npt.NDArray[np.float64], p: int) -> npt.NDArray[np.float64]:
    """Each row keeps its ``p`` largest entries (binarised), then symmetrised."""
    n = affinity.shape[0]
    keep = np.argpartition(-affinity, min(p, n - 1), axis=1)[:, :p]
    pruned = np.zeros_like(affinity)
    np.put_along_axis(pruned, keep, 1.0, axis=1)
    return (pruned + pruned.T) / 2


def _laplacian(graph: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The unnormalised graph Laplacian D - A (self-loops ignored)."""
    graph = graph.copy()
    np.fill_diagonal(graph, 0.0)
    laplacian: npt.NDArray[np.float64] = np.diag(graph.sum(axis=1)) - graph
    return laplacian


def estimate(
    affinity: npt.NDArray[np.float64],
    low: int,
    high: int,
    *,
    cap: int | None = None,
    max_p_share: float = 0.25,
) -> tuple[int, npt.NDArray[np.float64]]:
    """(speaker count in [low, high], the spectral embedding of each row).

    For every ``p`` tried, the count is where the Laplacian's eigengap is largest (up
    to ``cap``) and ``p / gap`` measures how clearly; the ``p`` with the smallest ratio
    wins (NME-SC). The count is then clamped to [low, high]: bounds that the estimate
    already meets do not change it.
    """
    n = affinity.shape[0]
    high = max(1, min(high, n - 1))
    low = min(max(1, low), high)
    search = max(low, min(n - 1, cap if cap is not None else high))
    best: tuple[float, int, int] | None = None
    top = max(2, int(n * max_p_share))
    for p in sorted({max(2, round(v)) for v in np.linspace(2, top, 12)}):
        values = np.linalg.eigvalsh(_laplacian(_pruned(affinity, p)))
        gaps = np.diff(values[: search + 1])  # gaps[i] = lambda_{i+1} - lambda_i
        window = gaps[:search]
        k = min(max(1 + int(np.argmax(window)), low), high)
        gap = float(window.max()) / max(float(values[-1]), 1e-12)
        ratio = p / n / max(gap, 1e-12)
        if best is None or ratio < best[0]:
            best = (ratio, k, p)
    assert best is not None
    _, k, p = best
    _, vectors = np.linalg.eigh(_laplacian(_pruned(affinity, p)))
    return k, vectors[:, :k]


def kmeans(x: npt.NDArray[np.float64], k: int, *, seed: int = 0, rounds: int = 10) -> Labels:
    """k-means++ seeding then Lloyd iterations; several seeded restarts, best inertia."""
    n = x.shape[0]
    if k <= 1 or n <= k:
        return np.arange(n, dtype=np.int64) if n <= k else np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    best: tuple[float, Labels] | None = None
    for _ in range(rounds):
        centres = [x[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            total = float(d2.sum())
            pick = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
            centres.append(x[pick])
        c = np.array(centres)
        labels = np.zeros(n, dtype=np.int64)
        for _ in range(100):
            d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
            new = np.argmin(d, axis=1).astype(np.int64)
            if np.array_equal(new, labels) and _ > 0:
                break
            labels = new
            for j in range(k):
                if np.any(labels == j):
                    c[j] = x[labels == j].mean(axis=0)
        inertia = float(((x - c[labels]) ** 2).sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, labels)
    assert best is not None
    return best[1]


def spectral_labels(embeddings: Array, low: int, high: int, *, min_windows: int = 1) -> Labels:
    """Cluster labels of the rows of ``embeddings``; the count estimated in [low, high].

    The estimate counts at most one speaker per ``min_windows`` rows (so that a short
    recording is not split into many voices), unless ``low`` asks for more.
    """
    n = embeddings.shape[0]
    if n < 3 or high <= 1:
        return np.zeros(n, dtype=np.int64)
    affinity = cosine_affinity(embeddings)
    # Counts are looked for up to SEARCH even when ``high`` is lower (then clamped): with
    # three voices and at most two asked for, the gap after the third eigenvalue is the
    # clear one, and stopping before it would find none.
    cap = min(max(high, SEARCH), max(1, n // max(1, min_windows)))
    k, spectral = estimate(affinity, low, high, cap=cap)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    rows = spectral / np.maximum(np.linalg.norm(spectral, axis=1, keepdims=True), 1e-12)
    return kmeans(rows, k)
