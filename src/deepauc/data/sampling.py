"""Training row order of one epoch: a seeded shuffle, or batches that each hold a fixed number
of positives (oversampling), split over DDP ranks and resumable at any batch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class EpochShard(Sampler[int]):
    """Rank ``rank``'s share ``perm[rank::world]`` of the epoch's seeded permutation.

    ``perm`` is the permutation ``RandomSampler`` draws from the same generator, so with
    one process the order is unchanged; with ``world`` ranks each taking ``B / world``
    rows per step, the union of the ranks' step-j batches is the single-process batch j.
    ``start`` skips that many of this rank's rows (a resumed epoch).
    """

    def __init__(
        self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0
    ) -> None:
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, epoch, rank, world
        self.start = start

    def __iter__(self):
        perm = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch))
        return iter(perm[self.rank :: self.world][self.start :].tolist())

    def __len__(self) -> int:
        return max(0, len(range(self.rank, self.n, self.world)) - self.start)


def positives_per_batch(pos_fraction: float, batch_size: int) -> int:
    """``round(pos_fraction · batch_size)``, at least one positive and one negative."""
    return min(max(1, round(pos_fraction * batch_size)), batch_size - 1)


def _passes(rows: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` rows taken from back-to-back shuffles of ``rows`` (each row once per pass)."""
    n_passes = -(-count // len(rows))
    return torch.cat([rows[torch.randperm(len(rows), generator=gen)] for _ in range(n_passes)])[
        :count
    ]


class PositiveShare(Sampler[int]):
    """Batches of ``batch_size`` rows holding exactly ``positives_per_batch(pos_fraction, B)``
    positives each, the meaning of the study's ``train.pos_fraction``.

    Positives come from successive shuffled passes over the positive rows (repeated as often
    as the epoch needs), negatives likewise; each batch is shuffled. An epoch has
    ``len(targets) // batch_size`` batches, as without oversampling. Seeded by (seed,
    epoch); rank ``rank`` of ``world`` takes ``batch[rank::world]`` of every batch, so the
    ranks' step-j rows together are batch j. ``start`` skips that many of this rank's rows.
    """

    def __init__(
        self,
        targets: np.ndarray,
        batch_size: int,
        pos_fraction: float,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
    ) -> None:
        y = torch.as_tensor(np.asarray(targets) > 0.5)
        self.pos, self.neg = torch.nonzero(y).flatten(), torch.nonzero(~y).flatten()
        if len(self.pos) == 0 or len(self.neg) == 0:
            raise ValueError("train.pos_fraction needs positive and negative training rows")
        if batch_size % world:
            raise ValueError(f"batch {batch_size} does not split over {world} ranks")
        self.batch_size, self.k = batch_size, positives_per_batch(pos_fraction, batch_size)
        self.n_batches = len(y) // batch_size
        self.seed, self.epoch, self.rank, self.world, self.start = seed, epoch, rank, world, start

    def batches(self) -> list[torch.Tensor]:
        """Every batch of the epoch (all ranks' rows)."""
        gen = epoch_generator(self.seed, self.epoch)
        k, neg_k, nb = self.k, self.batch_size - self.k, self.n_batches
        pos, neg = _passes(self.pos, nb * k, gen), _passes(self.neg, nb * neg_k, gen)
        out = []
        for b in range(nb):
            rows = torch.cat([pos[b * k : (b + 1) * k], neg[b * neg_k : (b + 1) * neg_k]])
            out.append(rows[torch.randperm(len(rows), generator=gen)])
        return out

    def __iter__(self):
        mine = [b[self.rank :: self.world] for b in self.batches()]
        flat = torch.cat(mine) if mine else torch.zeros(0, dtype=torch.long)
        return iter(flat[self.start :].tolist())

    def __len__(self) -> int:
        return max(0, self.n_batches * (self.batch_size // self.world) - self.start)
