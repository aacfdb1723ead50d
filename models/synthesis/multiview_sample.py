"""Rendered multi-view faces with ground truth, from any morphable model (training data, examples, benchmarks).

Each sample is one identity seen in V views: identity coefficients ~ N(0, identity_sigma) (normalised
by the model's std), one shared expression plus a per-view deviation, a weak-perspective pose per view
(yaws stepped across +-yaw_max_deg, a few degrees of pitch/roll jitter, a scale that makes the face
region about ``face_fill`` of the crop wide, the face region centred up to a small random shift),
spherical-harmonics light (ambient plus a roughly frontal light, slightly tinted), a per-vertex albedo
(a skin tone with smooth variation, darker brows, eyes and lips around the landmarks) and a smooth
random background with noise. Optional ``detail_amplitude`` adds a smooth random displacement along
the normals (model units) that the bases cannot express, for evaluation cases. Optional ``painted_eyes``
(sclera, iris and pupil inside the eyelid contours; the models' eye openings are closed surfaces) and
``mouth_cavity`` (a dark opening behind the lips instead of the background) make the faces look enough
like faces for a face detector trained on photos (MediaPipe found 58-70 % of plain renders, 97-100 %
with both and smoother detail). Optional ``specular_range`` adds a white Blinn-Phong highlight (strength drawn
per sample, towards the SH light's direction) and ``view_gain_std`` a colour gain per view and channel: what a
photometric term that assumes Lambertian surfaces under the same light in every view does not model.

Without detail, ``sample.vertices[v] == pose_vertices(mm.vertices(shape_coeffs, exp_coeffs[v]), pose[v])``.
"""

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SyntheticDataError
from ..face_model.landmark_layout import BROWS, EYES, MOUTH
from ..face_model.mediapipe_layout import INNER_LIPS, LEFT_EYE, MEDIAPIPE_LAYOUT, RIGHT_EYE
from ..face_model.morphable_model import MorphableModel
from ..fitting.photometric import gaussian_blur
from ..geometry.camera import IMAGE_SIZE, Pose, normalize_pose, pose_vertices, to_image
from ..geometry.normals import vertex_normals
from ..geometry.rasterizer import render_colors
from ..geometry.spherical_harmonics import sh_shading

# Version of the sample layout recorded in each sample's metadata.
FORMAT_VERSION = 1

# Skin tones (linear RGB albedo) the sample's tone is interpolated between.
LIGHT_SKIN = (0.88, 0.72, 0.63)
DARK_SKIN = (0.40, 0.27, 0.20)
EYE_COLOUR = (0.12, 0.10, 0.10)
HAIR_COLOUR = (0.16, 0.11, 0.08)
LIP_TINT = (0.85, 0.55, 0.55)
# Relative std of the skin tone per channel, and amplitude of the smooth redness variation (red channel).
SKIN_TINT_STD = 0.03
REDNESS_VARIATION = 0.03
# Gaussian radius (fraction of the face width) and strength of each darkened feature.
FEATURE_RADIUS = {"brows": 0.045, "eyes": 0.035, "lips": 0.04}
FEATURE_STRENGTH = {"brows": 0.6, "eyes": 0.6, "lips": 0.45}
# Wavelength (fraction of the face width) of the albedo's smooth variation; number of random waves per field.
ALBEDO_WAVELENGTH = 0.3
FIELD_WAVES = 24
# Painted eyes: sclera, pupil and iris colours (linear RGB), radii and gaze offset std as fractions of the face
# width (an iris ~11.6 mm and a pupil ~4 mm across on a 150 mm wide face).
SCLERA_COLOUR = (0.80, 0.76, 0.72)
PUPIL_COLOUR = (0.03, 0.03, 0.03)
IRIS_COLOURS = ((0.25, 0.15, 0.08), (0.30, 0.35, 0.45), (0.25, 0.30, 0.18), (0.12, 0.08, 0.05))
IRIS_BRIGHTNESS = (0.8, 1.2)
IRIS_RADIUS = 0.039
PUPIL_RADIUS = 0.013
GAZE_STD = 0.007
# Blinn-Phong exponent of the optional specular highlight (a broad, skin-like sheen).
SPECULAR_SHININESS = 20.0
# Mouth cavity: its colour, and how much larger than the inner-lip contour (about its centre) it is painted.
MOUTH_CAVITY_COLOUR = (0.12, 0.05, 0.05)
MOUTH_CAVITY_SCALE = 1.15
# Eyelid and inner-lip contours in the iBUG layout, for models without MediaPipe's correspondence.
IBUG_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
IBUG_INNER_LIPS = tuple(range(60, 68))


@dataclass(frozen=True)
class SampleConfig:
    """Settings of :func:`render_sample` (angles in degrees, lengths in pixels unless noted)."""

    views: int = 2
    identity_sigma: float = 1.0  # std of the normalised identity coefficients
    expression_sigma: float = 0.7  # std of the expression shared by the views
    expression_view_sigma: float = 0.3  # std of each view's deviation from it
    yaw_max_deg: float = 30.0  # yaws are stepped across [-yaw_max_deg, yaw_max_deg]
    yaw_jitter_deg: float = 4.0
    pitch_jitter_deg: float = 5.0
    roll_jitter_deg: float = 3.0
    face_fill: float = 0.6  # width of the frontal face region / crop width
    scale_jitter: float = 0.05  # relative std of the scale
    translation_jitter_px: float = 6.0
    ambient_range: tuple[float, float] = (0.55, 0.8)
    directional_range: tuple[float, float] = (0.2, 0.45)
    light_spread: float = 0.4  # std of the light direction's x and y (z = 1, towards the camera)
    light_tint: float = 0.04  # relative std of the light's colour per channel
    sh_noise: float = 0.03  # std of the second-order SH coefficients
    albedo_variation: float = 0.08  # relative amplitude of the smooth albedo variation
    background_noise: float = 0.04  # std of the background's per-pixel noise (intensity in [0, 1])
    pixel_noise: float = 0.01  # std of the final image noise
    blur_sigma_px: float = 0.6  # Gaussian blur of the rendered image
    detail_amplitude: float = 0.0  # std of the displacement along normals, model units (0: none)
    detail_wavelength: float = 0.08  # wavelength of that displacement, fraction of the face width
    painted_eyes: bool = False  # sclera, iris and pupil inside the eyelid contours
    mouth_cavity: bool = False  # a dark opening behind the lips
    specular_range: tuple[float, float] = (0.0, 0.0)  # strength of a white highlight, drawn per sample
    view_gain_std: float = 0.0  # relative std of a colour gain per view and channel

    def __post_init__(self) -> None:
        if self.views < 1:
            raise SyntheticDataError(f"views must be at least 1, got {self.views}")
        if not 0 < self.face_fill <= 1:
            raise SyntheticDataError(f"face_fill must lie in (0, 1], got {self.face_fill}")
        if not 0 <= self.yaw_max_deg < 90:
            raise SyntheticDataError(f"yaw_max_deg must lie in [0, 90), got {self.yaw_max_deg}")
        if self.detail_amplitude < 0 or self.detail_wavelength <= 0:
            raise SyntheticDataError("detail_amplitude must be >= 0 and detail_wavelength > 0")
        low, high = self.specular_range
        if not 0 <= low <= high or self.view_gain_std < 0:
            raise SyntheticDataError("specular_range must satisfy 0 <= low <= high and view_gain_std must be >= 0")


@dataclass
class SyntheticSample:
    """One rendered sample; arrays as in the module docstring, ``images`` (V, 256, 256, 3) uint8."""

    images: np.ndarray
    landmarks: np.ndarray
    vertices: np.ndarray
    landmarks3d: np.ndarray
    shape_coeffs: np.ndarray
    exp_coeffs: np.ndarray
    pose: np.ndarray
    model_vertices: np.ndarray
    sh_coeffs: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def views(self) -> int:
        return self.images.shape[0]


# ---------------------------------------------------------------------------------------------- random parts


def face_width(mm: MorphableModel) -> float:
    """x-extent of the mean shape's face region, model units."""
    x = mm.mean_shape.view(-1, 3)[mm.face_region_mask, 0]
    return float(x.max() - x.min())


def smooth_field(points: np.ndarray, wavelength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth zero-mean random field of unit std at ``points`` (n, 3): a sum of random plane waves.

    Args:
        wavelength: mean wavelength, in the points' units.
    Returns:
        (n,) float64.
    """
    directions = rng.standard_normal((FIELD_WAVES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequencies = directions * rng.uniform(0.7, 1.3, (FIELD_WAVES, 1)) / wavelength
    phases = rng.uniform(0, 2 * np.pi, FIELD_WAVES)
    return np.cos(2 * np.pi * points @ frequencies.T + phases).sum(axis=1) * np.sqrt(2.0 / FIELD_WAVES)


def _view_angles(rng: np.random.Generator, config: SampleConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pitch, yaw, roll (V,) in degrees; yaws stepped across the range in a random view order."""
    limit = config.yaw_max_deg
    if config.views == 1:
        yaw = rng.uniform(-limit, limit, 1)
    else:
        yaw = np.linspace(-limit, limit, config.views) + rng.normal(0, config.yaw_jitter_deg, config.views)
        yaw = rng.permutation(np.clip(yaw, -limit, limit))
    pitch = rng.normal(0, config.pitch_jitter_deg, config.views)
    roll = rng.normal(0, config.roll_jitter_deg, config.views)
    return pitch, yaw, roll


def _place_views(
    vertices: torch.Tensor, mm: MorphableModel, rng: np.random.Generator, config: SampleConfig
) -> torch.Tensor:
    """Normalised poses (V, 6) float32 that fill and centre the crop with each view's face region."""
    pitch, yaw, roll = (torch.from_numpy(a) for a in _view_angles(rng, config))
    scale = config.face_fill * IMAGE_SIZE / face_width(mm) * (1 + rng.normal(0, config.scale_jitter, config.views))
    zeros = torch.zeros(config.views, dtype=torch.float64)
    centred = normalize_pose(Pose(pitch, yaw, roll, torch.from_numpy(scale), zeros, zeros)).float()
    face = pose_vertices(vertices, centred)[:, mm.face_region_mask, :2]
    centre = (face.amax(dim=1) + face.amin(dim=1)) / 2
    shift = torch.from_numpy(rng.normal(0, config.translation_jitter_px, (config.views, 2))).float()
    translation = shift - centre
    pose = normalize_pose(Pose(pitch, yaw, roll, torch.from_numpy(scale), *translation.double().unbind(1)))
    return pose.float()


def _sh_light(rng: np.random.Generator, config: SampleConfig) -> np.ndarray:
    """(9, 3) SH coefficients: ambient + a roughly frontal, slightly upper light, tinted per channel."""
    direction = np.array([rng.normal(0, config.light_spread), rng.normal(0.2, config.light_spread), 1.0])
    direction /= np.linalg.norm(direction)
    coeffs = np.empty(9)
    coeffs[0] = rng.uniform(*config.ambient_range)
    coeffs[1:4] = rng.uniform(*config.directional_range) * direction
    coeffs[4:] = rng.normal(0, config.sh_noise, 5)
    tint = 1 + rng.normal(0, config.light_tint, 3)
    return (coeffs[:, None] * tint[None, :]).astype(np.float32)


def _albedo(neutral: np.ndarray, mm: MorphableModel, rng: np.random.Generator, config: SampleConfig) -> np.ndarray:
    """(n, 3) per-vertex albedo in [0, 1] on the neutral identity mesh (model units)."""
    width = face_width(mm)
    tone = rng.uniform()
    skin = (1 - tone) * np.array(LIGHT_SKIN) + tone * np.array(DARK_SKIN)
    skin = skin * (1 + rng.normal(0, SKIN_TINT_STD, 3))
    luminance = smooth_field(neutral, ALBEDO_WAVELENGTH * width, rng)
    redness = smooth_field(neutral, ALBEDO_WAVELENGTH * width, rng)
    albedo = skin[None, :] * (1 + config.albedo_variation * luminance[:, None])
    albedo[:, 0] += REDNESS_VARIATION * redness
    landmarks = neutral[mm.landmark_indices.cpu().numpy()]
    hair = np.array(HAIR_COLOUR) * rng.uniform(0.6, 1.6)
    colours = {"brows": hair, "eyes": np.array(EYE_COLOUR), "lips": skin * np.array(LIP_TINT)}
    groups = {"brows": list(BROWS), "eyes": list(EYES), "lips": list(MOUTH)}
    for name, group in groups.items():
        squared = ((neutral[:, None, :] - landmarks[None, group, :]) ** 2).sum(-1).min(axis=1)
        weight = FEATURE_STRENGTH[name] * np.exp(-squared / (2 * (FEATURE_RADIUS[name] * width) ** 2))
        albedo = albedo * (1 - weight[:, None]) + colours[name][None, :] * weight[:, None]
    return np.clip(albedo, 0, 1).astype(np.float32)


def _specular(normals: torch.Tensor, sh: np.ndarray, strength: float) -> torch.Tensor:
    """(n, 1) white Blinn-Phong highlight of camera-space unit ``normals`` (n, 3) (out of the head) for a light from
    the direction of the (9, 3) SH coefficients' first-order band, seen from the camera (+z)."""
    light = torch.from_numpy(sh[1:4].mean(axis=1)).to(normals.dtype)
    half = light / light.norm() + torch.tensor([0.0, 0.0, 1.0], dtype=normals.dtype)
    return strength * (normals @ (half / half.norm())).clamp(min=0).pow(SPECULAR_SHININESS).unsqueeze(1)


def _background(rng: np.random.Generator, config: SampleConfig) -> torch.Tensor:
    """(256, 256, 3) smooth random colour field plus pixel noise, in [0, 1]."""
    cells = int(rng.integers(2, 8))
    colours = rng.uniform(0, 1, (1, 3, cells, cells))
    saturation = rng.uniform(0.2, 0.8)
    coarse = torch.from_numpy(saturation * colours + (1 - saturation) * colours.mean(axis=1, keepdims=True)).float()
    smooth = F.interpolate(coarse, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False)[0]
    noise = torch.from_numpy(rng.normal(0, config.background_noise, (3, IMAGE_SIZE, IMAGE_SIZE))).float()
    return (smooth + noise).clamp(0, 1).permute(1, 2, 0)


def _detail_offset(
    identity: torch.Tensor, mm: MorphableModel, rng: np.random.Generator, config: SampleConfig
) -> torch.Tensor:
    """(n, 3) smooth displacement along the identity mesh's normals, std ``detail_amplitude`` (model units)."""
    normals = vertex_normals(identity.unsqueeze(0), mm.triangles, mm.adjacent_triangles)[0]
    wavelength = config.detail_wavelength * face_width(mm)
    heights = smooth_field(identity.double().numpy(), wavelength, rng) * config.detail_amplitude
    return torch.from_numpy(heights).float().unsqueeze(1) * normals


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(n,) bool: which of the (n, 2) points lie inside the closed (k, 2) polygon (even-odd rule)."""
    x, y = points[:, :1], points[:, 1:2]
    start, end = polygon, np.roll(polygon, -1, axis=0)
    crosses = (start[:, 1] <= y) != (end[:, 1] <= y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = start[:, 0] + (y - start[:, 1]) * (end[:, 0] - start[:, 0]) / (end[:, 1] - start[:, 1])
    return (crosses & (x < x_cross)).sum(axis=1) % 2 == 1


def feature_contours(mm: MorphableModel, vertices: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
    """The eyelid contours (two (k, 3) arrays) and the inner-lip contour (m, 3) of a mesh (n, 3) of ``mm``:
    MediaPipe's where the model has its correspondence, else the iBUG landmarks'."""
    dense = mm.dense_landmarks
    if dense is not None and dense.layout == MEDIAPIPE_LAYOUT:
        points = dense.points(vertices).numpy()
        return [points[list(RIGHT_EYE)], points[list(LEFT_EYE)]], points[list(INNER_LIPS)]
    points = vertices[mm.landmark_indices].numpy()
    return [points[list(eye)] for eye in IBUG_EYES], points[list(IBUG_INNER_LIPS)]


def _paint_eyes(albedo: np.ndarray, neutral: np.ndarray, mm: MorphableModel, rng: np.random.Generator) -> np.ndarray:
    """Albedo (n, 3) with sclera, iris and pupil painted inside the eyelid contours of the neutral mesh."""
    width = face_width(mm)
    eyes, _ = feature_contours(mm, torch.from_numpy(neutral))
    iris = np.array(IRIS_COLOURS[int(rng.integers(len(IRIS_COLOURS)))]) * rng.uniform(*IRIS_BRIGHTNESS)
    gaze = rng.normal(0, GAZE_STD * width, 2)
    painted = albedo.copy()
    for contour in eyes:
        inside = inside_polygon(neutral[:, :2], contour[:, :2])
        radius = np.linalg.norm(neutral[:, :2] - (contour[:, :2].mean(axis=0) + gaze), axis=1)
        colour = np.where(radius[:, None] < IRIS_RADIUS * width, iris, np.array(SCLERA_COLOUR))
        colour = np.where(radius[:, None] < PUPIL_RADIUS * width, np.array(PUPIL_COLOUR), colour)
        painted[inside] = colour[inside]
    return painted.astype(np.float32)


def _mouth_background(background: torch.Tensor, image_vertices: torch.Tensor, mm: MorphableModel) -> torch.Tensor:
    """The background (H, W, 3) with the mouth opening of one view's image-space mesh (n, 3) painted dark."""
    _, lips = feature_contours(mm, image_vertices)
    centre = lips[:, :2].mean(axis=0)
    contour = centre + (lips[:, :2] - centre) * MOUTH_CAVITY_SCALE
    height, width = background.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)
    inside = torch.from_numpy(inside_polygon(pixels, contour).reshape(height, width))
    painted = background.clone()
    painted[inside] = torch.tensor(MOUTH_CAVITY_COLOUR, dtype=background.dtype)
    return painted


# ---------------------------------------------------------------------------------------------- rendering


def render_sample(mm: MorphableModel, rng: np.random.Generator, config: SampleConfig | None = None) -> SyntheticSample:
    """Render one random multi-view sample (see the module docstring).

    Identity, poses, appearance and detail draw from independent child generators of ``rng``, so
    e.g. adding detail does not change the identity or the poses of a seed.
    """
    config = config or SampleConfig()
    if mm.device.type != "cpu":
        mm = mm.to("cpu")
    identity_rng, pose_rng, appearance_rng, detail_rng, photometric_rng = rng.spawn(5)
    n_shape, n_exp = mm.shape_std.shape[0], mm.exp_std.shape[0]
    shape = torch.from_numpy(identity_rng.normal(0, config.identity_sigma, (1, n_shape))).float()
    shared = identity_rng.normal(0, config.expression_sigma, (1, n_exp))
    expression = shared + identity_rng.normal(0, config.expression_view_sigma, (config.views, n_exp))
    expression = torch.from_numpy(expression).float()

    with torch.no_grad():
        identity = mm.vertices(shape)[0]
        offset = torch.zeros_like(identity)
        if config.detail_amplitude > 0:
            offset = _detail_offset(identity, mm, detail_rng, config)
        model_vertices = mm.vertices(shape.expand(config.views, -1), expression) + offset
        pose = _place_views(model_vertices, mm, pose_rng, config)
        camera = pose_vertices(model_vertices, pose)
        image_vertices = to_image(camera)

        neutral = identity.double().numpy()
        albedo = _albedo(neutral, mm, appearance_rng, config)
        if config.painted_eyes:
            albedo = _paint_eyes(albedo, neutral, mm, appearance_rng)
        albedo = torch.from_numpy(albedo)
        sh = _sh_light(appearance_rng, config)
        normals = -vertex_normals(camera, mm.triangles, mm.adjacent_triangles)  # out of the head
        strength = photometric_rng.uniform(*config.specular_range)
        gains = 1 + photometric_rng.normal(0, config.view_gain_std, (config.views, 3))
        images = []
        for view in range(config.views):
            colours = albedo * sh_shading(normals[view], torch.from_numpy(sh)).clamp(min=0)
            if strength > 0:
                colours = colours + _specular(normals[view], sh, strength)
            colours = colours * torch.from_numpy(gains[view]).float()
            background = _background(appearance_rng, config)
            if config.mouth_cavity:
                background = _mouth_background(background, image_vertices[view], mm)
            image = render_colors(image_vertices[view], mm.triangles, colours, IMAGE_SIZE, IMAGE_SIZE, background)
            image = gaussian_blur(image.permute(2, 0, 1).unsqueeze(0), config.blur_sigma_px)[0].permute(1, 2, 0)
            image = image + torch.from_numpy(appearance_rng.normal(0, config.pixel_noise, image.shape)).float()
            images.append((image.clamp(0, 1) * 255).round().to(torch.uint8).numpy())

    landmark_indices = mm.landmark_indices
    return SyntheticSample(
        images=np.stack(images),
        landmarks=image_vertices[:, landmark_indices, :2].numpy().astype(np.float32),
        vertices=camera.numpy().astype(np.float32),
        landmarks3d=camera[:, landmark_indices].numpy().astype(np.float32),
        shape_coeffs=shape[0].numpy(),
        exp_coeffs=expression.numpy(),
        pose=pose.numpy(),
        model_vertices=(identity + offset).numpy().astype(np.float32),
        sh_coeffs=sh,
        meta={
            "format_version": FORMAT_VERSION,
            "views": config.views,
            "num_vertices": mm.num_vertices,
            "config": asdict(config),
        },
    )
