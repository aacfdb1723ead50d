"""Settings of the learned optimisation (the values of the released model, named once).

Bai et al., CVPR 2020, Sec. 3.2-3.4: three feature-pyramid levels (32x32, 64x64 and 128x128 features of a
256x256 input) each take three gradient steps on the identity, the per-view pose and the per-view
coefficients of an adaptive basis predicted in a UV map, descending
``feature_weight * feature-metric + landmark_weight * landmark`` (scaled by the batch size) with step sizes
``10 ** (scale * tanh(raw) + bias)`` per parameter group (shape, expression, pose, adaptive).
Values: the authors' ``NRMVSOptimization`` (``gradient_descent``, ``forward``, ``adap_B_net2/3/4``).
"""

from dataclasses import dataclass

from ..face_model.uv_raster import UV_SIZES

# Parameter groups of the step-size nets, in output order.
STEP_GROUPS = ("shape", "expression", "pose", "adaptive")


@dataclass(frozen=True)
class LevelConfig:
    """One pyramid level of the optimisation.

    level: index of the feature-pyramid map (2, 3, 4: 32x32, 64x64, 128x128 for a 256 input); the
    checkpoint names the level's nets after it (``step_net{level}``, ``adap_B_net{level}``).
    uv_size: side of the adaptive basis' UV map (a size the morphable model has rasterisation tables for).
    step_scales, step_biases: per group of :data:`STEP_GROUPS`, step = 10 ** (scale * tanh(raw) + bias).
    expression_init: the adaptive basis starts from the expression PCA (the released model: level 2 only).
    """

    level: int
    uv_size: int
    step_scales: tuple[float, float, float, float]
    step_biases: tuple[float, float, float, float]
    expression_init: bool = False

    def __post_init__(self) -> None:
        if len(self.step_scales) != len(STEP_GROUPS) or len(self.step_biases) != len(STEP_GROUPS):
            raise ValueError(f"level {self.level}: one step scale and bias per group {STEP_GROUPS}")
        if self.uv_size not in UV_SIZES:
            raise ValueError(f"level {self.level}: uv_size {self.uv_size} is not one of the tabulated sizes {UV_SIZES}")


RELEASED_LEVELS = (
    LevelConfig(2, UV_SIZES[0], (2.0, 2.0, 2.0, 4.0), (0.0, 0.0, -2.5, 0.0), expression_init=True),
    LevelConfig(3, UV_SIZES[1], (4.0, 4.0, 4.0, 4.0), (0.0, 0.0, -2.5, 0.0)),
    LevelConfig(4, UV_SIZES[2], (4.0, 4.0, 4.0, 4.0), (0.0, 0.0, -2.5, 0.0)),
)


@dataclass(frozen=True)
class NRMVSConfig:
    """The optimisation's schedule and energy.

    levels: :class:`LevelConfig` per level, coarse to fine. steps_per_level: gradient steps per level.
    feature_weight, landmark_weight: energy weights. num_adaptive: adaptive basis vectors per level (K).
    """

    levels: tuple[LevelConfig, ...] = RELEASED_LEVELS
    steps_per_level: int = 3
    feature_weight: float = 0.25
    landmark_weight: float = 0.025
    num_adaptive: int = 64

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("the optimisation needs at least one level")
        if len({level.level for level in self.levels}) != len(self.levels):
            raise ValueError("pyramid levels must be distinct")
        if self.steps_per_level < 1 or self.num_adaptive < 1:
            raise ValueError("steps_per_level and num_adaptive must be positive")
        if self.feature_weight < 0 or self.landmark_weight < 0:
            raise ValueError("energy weights must be non-negative")
