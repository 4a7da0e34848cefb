"""The training batches of one epoch: a plain shuffle, or batches that each hold a fixed share
of positives, drawn again from the positives as often as needed (oversampling)."""

from __future__ import annotations

import torch

__all__ = ["epoch_batches"]


def epoch_batches(
    y: torch.Tensor, batch_size: int, pos_fraction: float | None, gen: torch.Generator
) -> list[torch.Tensor]:
    """Row indices of each batch of one epoch, ``len(y) // batch_size`` batches (at least one).

    ``pos_fraction`` None: a random permutation cut into batches, the last partial batch
    dropped (batch score normalisation needs whole batches). Otherwise every batch holds
    ``round(pos_fraction · batch_size)`` positives (at least one, leaving at least one
    negative): positives come from shuffled passes over the positive rows, repeated as
    often as needed, negatives likewise from shuffled passes over the negative rows; an epoch
    has as many steps as without oversampling.
    """
    n = len(y)
    nb = max(1, n // batch_size)
    if pos_fraction is None:
        perm = torch.randperm(n, generator=gen)
        return (
            [perm[b * batch_size : (b + 1) * batch_size] for b in range(nb)] if nb > 1 else [perm]
        )
    pos = torch.nonzero(y > 0.5).flatten()
    neg = torch.nonzero(y <= 0.5).flatten()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("oversampling needs positive and negative training rows")
    k = min(max(1, round(pos_fraction * batch_size)), batch_size - 1)
    pos_stream = _cycled(pos, nb * k, gen)
    neg_stream = _cycled(neg, nb * (batch_size - k), gen)
    out = []
    for b in range(nb):
        rows = torch.cat(
            [
                pos_stream[b * k : (b + 1) * k],
                neg_stream[b * (batch_size - k) : (b + 1) * (batch_size - k)],
            ]
        )
        out.append(rows[torch.randperm(len(rows), generator=gen)])
    return out


def _cycled(rows: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` rows from back-to-back shuffled passes over ``rows``."""
    passes = -(-count // len(rows))
    return torch.cat([rows[torch.randperm(len(rows), generator=gen)] for _ in range(passes)])[
        :count
    ]
