"""Exact Shapley values of small games by enumerating every coalition.

For a game ``v`` on players ``0..n-1`` the Shapley value of player ``i`` is

    phi_i = sum over coalitions S without i of  w(|S|) * (v(S + i) - v(S)),
    w(s) = s! (n - 1 - s)! / n!.

A game is given as a table of its ``2**n`` values indexed by bit masks (bit ``i`` set means
player ``i`` is in the coalition), or as a batched ``value_fn`` that maps a boolean
``(M, n)`` tensor of coalitions to ``(M,)`` values (or ``(M, K)`` for ``K`` games at once).

Everything is computed in float64 as weighted *differences* ``v(S + i) - v(S)``, so a player
whose marginal contributions are all zero gets exactly ``0.0``. A value whose magnitude is
below the rounding-error bound of its own sum, ``(m + 2) * eps * sum |w * diff|`` for ``m``
terms, cannot be told apart from zero and is returned as exactly ``0.0``: a zero Shapley value
never comes out as a tiny positive residue that passes a ``> 0`` test.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from provex.checks import check_int

__all__ = ["MAX_PLAYERS", "coalitions", "exact_shapley", "shapley_from_table", "shapley_weights"]

MAX_PLAYERS = 20
"""``exact_shapley`` enumerates ``2**n`` coalitions; beyond this it refuses (use h-Shap or sampling)."""


def shapley_weights(n_players: int) -> torch.Tensor:
    """``w[s] = s! (n-1-s)! / n!`` for ``s = 0..n-1`` in float64 (the weight of a coalition of size s)."""
    n = n_players
    return torch.tensor(
        [math.factorial(s) * math.factorial(n - 1 - s) / math.factorial(n) for s in range(n)], dtype=torch.float64
    )


def coalitions(n_players: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All ``2**n`` coalitions as a boolean ``(2**n, n)`` tensor; row ``m`` holds the bits of ``m``."""
    idx = torch.arange(2**n_players, device=device)
    bits = 2 ** torch.arange(n_players, device=device)
    return (idx[:, None] & bits[None, :]) != 0


def _check_players(n_players: object) -> int:
    n_players = check_int(n_players, "n_players")
    if n_players > MAX_PLAYERS:
        raise ValueError(f"n_players={n_players} needs 2**{n_players} game values; at most {MAX_PLAYERS} are supported")
    return n_players


def shapley_from_table(values: torch.Tensor, n_players: int) -> torch.Tensor:
    """Shapley values of games given by their value tables ``(..., 2**n)`` -> ``(..., n)`` float64.

    Entry ``m`` of the last axis is the value of the coalition whose members are the set bits
    of ``m``. Values within floating-point rounding of zero are returned as exactly zero.
    """
    n = _check_players(n_players)
    if values.shape[-1] != 2**n:
        raise ValueError(f"values must have 2**n_players = {2**n} entries in the last axis, got {values.shape[-1]}")
    v = values.detach().to(torch.float64)
    idx = torch.arange(2**n, device=v.device)
    size = coalitions(n, device=v.device).sum(1)
    w = shapley_weights(n).to(v.device)
    eps = torch.finfo(torch.float64).eps
    m = 2 ** (n - 1)
    out = []
    for i in range(n):
        without = idx[(idx & (1 << i)) == 0]
        terms = w[size[without]] * (v[..., without | (1 << i)] - v[..., without])
        phi = terms.sum(-1)
        bound = (m + 2) * eps * terms.abs().sum(-1)
        out.append(torch.where(phi.abs() <= bound, torch.zeros_like(phi), phi))
    return torch.stack(out, dim=-1)


def exact_shapley(
    value_fn: Callable[[torch.Tensor], torch.Tensor],
    n_players: int,
    batch_size: int = 4096,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Exact Shapley values of the game ``value_fn`` on ``n_players`` players.

    ``value_fn`` receives boolean coalitions ``(M, n_players)`` (at most ``batch_size`` rows
    per call, on ``device``) and returns their values ``(M,)`` or ``(M, K)``. Returns float64
    ``(n_players,)`` or ``(n_players, K)`` on the CPU. Cost: ``2**n_players`` evaluations.
    """
    n = _check_players(n_players)
    batch_size = check_int(batch_size, "batch_size")
    table = coalitions(n, device=device)
    chunks = []
    for start in range(0, table.shape[0], batch_size):
        part = table[start : start + batch_size]
        val = torch.as_tensor(value_fn(part))
        if val.ndim not in (1, 2) or val.shape[0] != part.shape[0]:
            raise ValueError(
                f"value_fn must return ({part.shape[0]},) or ({part.shape[0]}, K) values, got {tuple(val.shape)}"
            )
        chunks.append(val.detach().to("cpu", torch.float64))
    values = torch.cat(chunks)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("value_fn returned NaN or infinite values")
    if values.ndim == 1:
        return shapley_from_table(values, n)
    return shapley_from_table(values.T, n).T
