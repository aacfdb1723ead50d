"""L-BFGS with a strong-Wolfe line search, for the few hundred variables of the weights-free fit.

The limited-memory BFGS direction (the two-loop recursion, Nocedal and Wright, "Numerical Optimization", 2nd ed.,
Algorithm 7.4, with the initial Hessian scaled by ``s.y / y.y``) and the strong-Wolfe line search of their
Algorithms 3.5 and 3.6 (bracketing, then zooming in with safeguarded cubic interpolation). The variables are
packed into one float64 vector; the energy and its gradient come from torch's autograd.

``torch.optim.LBFGS`` would do much the same, but constructing any ``torch.optim`` optimiser imports
``torch._dynamo``, which cost the first fit of a process about 2 s; SciPy's L-BFGS-B calls OpenBLAS, whose
worker threads, spinning between its tiny calls, slowed the fit's own torch work two-fold on a 2-core machine.
"""

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import torch

# L-BFGS memory (pairs of updates kept).
HISTORY = 10
# Energy evaluations allowed per iteration (torch.optim.LBFGS's default max_eval = 1.25 max_iter).
EVALUATIONS_PER_ITERATION = 1.25
# Stop when the largest gradient entry falls below GRADIENT_TOLERANCE, or when a step changes no variable, or the
# energy, by more than CHANGE_TOLERANCE (torch.optim.LBFGS's tolerance_grad and tolerance_change).
GRADIENT_TOLERANCE = 1e-7
CHANGE_TOLERANCE = 1e-9
# Strong Wolfe constants: sufficient decrease and curvature (the usual values for quasi-Newton directions).
SUFFICIENT_DECREASE = 1e-4
CURVATURE = 0.9
# Bracketing extrapolates to at most this multiple of the current step.
MAX_EXTRAPOLATION = 10.0
# Zoom keeps each trial step at least this fraction of the bracket away from its ends.
ZOOM_MARGIN = 0.1
# Skip an update whose curvature s.y is below this (the BFGS update would not stay positive definite).
MIN_CURVATURE = 1e-10


class _Point(NamedTuple):
    """A trial step along the search direction: step length, energy, gradient and directional derivative."""

    step: float
    energy: float
    gradient: torch.Tensor
    slope: float


def minimise(variables: list[torch.Tensor], iterations: int, energy_fn: Callable[[], torch.Tensor]) -> int:
    """Minimise ``energy_fn()`` over ``variables`` in place, for at most ``iterations`` L-BFGS iterations.

    Args:
        variables: tensors (any shapes, one device and floating dtype) that ``energy_fn`` reads; they are left at
            the last accepted iterate (the lowest energy found), without gradients.
        iterations: the most L-BFGS iterations (and at most 1.25 energy evaluations per iteration).
        energy_fn: computes the scalar energy from the current values of ``variables``.
    Returns:
        The number of energy evaluations.
    """
    sizes = [variable.numel() for variable in variables]
    x = torch.cat([variable.detach().reshape(-1) for variable in variables]).double()
    budget = max(1, int(iterations * EVALUATIONS_PER_ITERATION))
    used = 0

    def evaluate(point: torch.Tensor) -> tuple[float, torch.Tensor]:
        nonlocal used
        used += 1
        with torch.no_grad():
            for variable, chunk in zip(variables, point.split(sizes), strict=True):
                variable.copy_(chunk.view_as(variable))
        energy = energy_fn()
        gradients = torch.autograd.grad(energy, variables, allow_unused=True)
        flat = [
            torch.zeros(size, dtype=torch.float64, device=point.device) if g is None else g.reshape(-1).double()
            for g, size in zip(gradients, sizes, strict=True)
        ]
        return float(energy.detach()), torch.cat(flat)

    for variable in variables:
        variable.requires_grad_(True)
    try:
        energy, gradient = evaluate(x)
        steps: deque[tuple[torch.Tensor, torch.Tensor, float]] = deque(maxlen=HISTORY)
        for iteration in range(iterations):
            if float(gradient.abs().max()) <= GRADIENT_TOLERANCE:
                break
            direction = _direction(gradient, steps)
            slope = float(gradient @ direction)
            if slope > -CHANGE_TOLERANCE:
                break
            first_step = min(1.0, 1.0 / float(gradient.abs().sum())) if iteration == 0 else 1.0
            start = _Point(0.0, energy, gradient, slope)
            found = _strong_wolfe(evaluate, x, direction, start, first_step, budget - used)
            if found.step == 0.0:
                break
            step = found.step * direction
            change = found.gradient - gradient
            curvature = float(change @ step)
            if curvature > MIN_CURVATURE:
                steps.append((step, change, 1.0 / curvature))
            x = x + step
            previous, energy, gradient = energy, found.energy, found.gradient
            if used >= budget or float(step.abs().max()) <= CHANGE_TOLERANCE:
                break
            if abs(energy - previous) < CHANGE_TOLERANCE:
                break
        with torch.no_grad():
            for variable, chunk in zip(variables, x.split(sizes), strict=True):
                variable.copy_(chunk.view_as(variable))
    finally:
        for variable in variables:
            variable.requires_grad_(False)
    return used


def _direction(gradient: torch.Tensor, steps: deque[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """The L-BFGS search direction ``-H gradient`` by the two-loop recursion over the stored (s, y, 1 / s.y)."""
    q = -gradient
    alphas = []
    for s, y, rho in reversed(steps):
        alpha = rho * float(s @ q)
        q = q - alpha * y
        alphas.append(alpha)
    if steps:
        s, y, _ = steps[-1]
        q = q * (float(s @ y) / float(y @ y))
    for (s, y, rho), alpha in zip(steps, reversed(alphas), strict=True):
        beta = rho * float(y @ q)
        q = q + (alpha - beta) * s
    return q


def _strong_wolfe(
    evaluate: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    x: torch.Tensor,
    direction: torch.Tensor,
    start: _Point,
    step: float,
    budget: int,
) -> _Point:
    """A step along ``direction`` satisfying the strong Wolfe conditions (Nocedal and Wright, Algorithm 3.5).

    Returns the accepted point; when the evaluation ``budget`` runs out first, the lowest point that satisfies
    sufficient decrease (step 0.0, the start itself, when there is none).
    """

    def probe(length: float) -> _Point:
        energy, gradient = evaluate(x + length * direction)
        return _Point(length, energy, gradient, float(gradient @ direction))

    previous = start
    for trial in range(budget):
        point = probe(step)
        if point.energy > start.energy + SUFFICIENT_DECREASE * step * start.slope or (
            trial > 0 and point.energy >= previous.energy
        ):
            return _zoom(probe, start, previous, point, budget - trial - 1, direction)
        if abs(point.slope) <= -CURVATURE * start.slope:
            return point
        if point.slope >= 0:
            return _zoom(probe, start, point, previous, budget - trial - 1, direction)
        low = step + ZOOM_MARGIN * (step - previous.step)
        extrapolated = _cubic_minimiser(previous, point, low, MAX_EXTRAPOLATION * step)
        previous, step = point, extrapolated
    return previous


def _zoom(
    probe: Callable[[float], _Point], start: _Point, low: _Point, high: _Point, budget: int, direction: torch.Tensor
) -> _Point:
    """Nocedal and Wright's Algorithm 3.6: shrink the bracket [low, high] (low: the lower energy, satisfying
    sufficient decrease) to a step satisfying the strong Wolfe conditions; low when the budget runs out."""
    largest = float(direction.abs().max())
    for _ in range(budget):
        width = abs(high.step - low.step)
        if width * largest <= CHANGE_TOLERANCE:
            break
        left, right = sorted((low.step, high.step))
        margin = ZOOM_MARGIN * width
        step = _cubic_minimiser(low, high, left + margin, right - margin)
        point = probe(step)
        if point.energy > start.energy + SUFFICIENT_DECREASE * step * start.slope or point.energy >= low.energy:
            high = point
            continue
        if abs(point.slope) <= -CURVATURE * start.slope:
            return point
        if point.slope * (high.step - low.step) >= 0:
            high = low
        low = point
    return low


def _cubic_minimiser(first: _Point, second: _Point, lower: float, upper: float) -> float:
    """The minimiser of the cubic through two points' energies and slopes, clamped to [lower, upper]; the
    interval's middle where the cubic has no minimum."""
    if first.step == second.step:
        return (lower + upper) / 2.0
    d1 = first.slope + second.slope - 3.0 * (first.energy - second.energy) / (first.step - second.step)
    square = d1 * d1 - first.slope * second.slope
    if square < 0.0:
        return (lower + upper) / 2.0
    d2 = square**0.5 * (1.0 if second.step > first.step else -1.0)
    denominator = second.slope - first.slope + 2.0 * d2
    if denominator == 0.0:
        return (lower + upper) / 2.0
    minimiser = second.step - (second.step - first.step) * (second.slope + d2 - d1) / denominator
    return min(max(minimiser, lower), upper)
