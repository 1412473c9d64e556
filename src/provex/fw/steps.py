"""Step-size rules of the Frank-Wolfe solvers.

- ``"2/(t+2)"`` (alias ``"open-loop"``): the classic agnostic rule, O(1/t) on convex problems.
- ``"1/sqrt(t+1)"`` (alias ``"sqrt"``): the non-convex rule (O(1/sqrt(t)) FW gap).
- ``"monotone"``: the monotone non-convex rule ``gamma = 2^-N / sqrt(t+1)``; each problem
  keeps its own ``N`` (never lowered), raised until the objective does not increase. It
  needs a deterministic objective (the comparison of two noisy estimates means nothing).

``t`` counts from 0, so the two open-loop rules take a full step (gamma = 1) first.
"""

from __future__ import annotations

import math

import torch

from provex.checks import unknown

__all__ = ["STEP_RULES", "resolve_step", "step_size"]

STEP_RULES: dict[str, str] = {
    "2/(t+2)": "2/(t+2)",
    "open-loop": "2/(t+2)",
    "1/sqrt(t+1)": "1/sqrt(t+1)",
    "sqrt": "1/sqrt(t+1)",
    "monotone": "monotone",
}


def resolve_step(step: str, name: str = "step") -> str:
    """Canonical name of a step rule; an unknown one lists the valid names."""
    if not isinstance(step, str) or step.lower() not in STEP_RULES:
        raise ValueError(f"{name} must be one of {sorted(STEP_RULES)}, got {step!r}")
    return STEP_RULES[step.lower()]


def step_size(rule: str, t: int, factor: torch.Tensor | None = None) -> float | torch.Tensor:
    """Step size at iteration ``t`` (per problem for ``"monotone"``, from its ``factor`` N)."""
    if rule == "2/(t+2)":
        return 2.0 / (t + 2.0)
    if rule == "1/sqrt(t+1)":
        return 1.0 / math.sqrt(t + 1.0)
    if rule == "monotone":
        if factor is None:
            raise ValueError("the monotone rule needs each problem's factor")
        return torch.exp2(-factor.to(torch.float64)) / math.sqrt(t + 1.0)
    raise unknown("step rule", rule, STEP_RULES.values())
