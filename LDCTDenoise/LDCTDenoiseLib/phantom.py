"""A digital anthropomorphic abdomen phantom, so the demo, the tests and the simulator work without patient data.

An adult abdomen at the level of the liver and kidneys (contrast-enhanced, portal-venous-like), built from a table
of (super)ellipses in millimetres: x grows to the image right (the patient's left, radiological display), y grows
downwards (posterior; the patient lies supine on the table). Structures are painted in table order, each one with a
soft edge (partial volume) and optionally clipped to a parent structure (an organ stays inside the abdominal cavity,
a lesion inside the liver). Across slices the organs shift and grow a little (bounded, so any number of slices stays
anatomical), small lesions are spheres that appear in a few slices only, and a faint, smoothly correlated random
texture (a few HU; trabecular grain in bone) keeps the phantom from being piecewise constant. The anatomy is fixed;
the seed only changes the texture, so the regions of interest of :func:`phantom_rois` hold for every seed and slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import erfc

from .errors import LDCTDenoiseError
from .metrics import Roi

SLICE_SPACING_MM = 3.0
AIR_HU = -1000.0
LIVER_HU = 60.0
MIN_FIELD_OF_VIEW_MM = 350.0  # the body is 340 mm wide
EDGE_BLUR_MM = 0.35  # partial-volume width of every edge (at least half a pixel)
Z_VARIATION_MM = 30.0  # organs reach most of their through-plane change within about this distance of the centre


@dataclass(frozen=True)
class Motion:
    """How a structure changes through the slices, per unit of the slice's position factor (tanh(z / 30 mm))."""

    shift_x_mm: float = 0.0
    shift_y_mm: float = 0.0
    scale: float = 0.0
    turn_deg: float = 0.0


STILL = Motion()


@dataclass(frozen=True)
class Ellipse:
    """A (super)ellipse in mm, rotated by ``angle_deg``; ``exponent`` above 2 squares it off (a body outline)."""

    center_x: float
    center_y: float
    semi_x: float
    semi_y: float
    angle_deg: float = 0.0
    exponent: float = 2.0

    def moved(self, motion: Motion, position: float, size_factor: float = 1.0) -> "Ellipse":
        """The ellipse as it is in a slice at ``position`` (-1..1), optionally shrunk (a sphere's cross-section)."""
        scale = (1.0 + motion.scale * position) * size_factor
        return Ellipse(self.center_x + motion.shift_x_mm * position, self.center_y + motion.shift_y_mm * position,
                       self.semi_x * scale, self.semi_y * scale, self.angle_deg + motion.turn_deg * position,
                       self.exponent)

    def extent_mm(self) -> float:
        """Radius of a circle that holds the shape, to limit the work to its bounding box."""
        return max(self.semi_x, self.semi_y) * (2.0 ** 0.5 if self.exponent > 2.0 else 1.0)

    def signed_distance(self, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
        """Approximate signed distance to the outline in mm (negative inside): first-order (F - 1) / |grad F|."""
        angle = math.radians(self.angle_deg)
        dx, dy = x_mm - self.center_x, y_mm - self.center_y
        u = (dx * math.cos(angle) + dy * math.sin(angle)) / self.semi_x
        v = (-dx * math.sin(angle) + dy * math.cos(angle)) / self.semi_y
        p = self.exponent
        abs_u, abs_v = np.abs(u) + 1e-12, np.abs(v) + 1e-12
        level = (abs_u ** p + abs_v ** p) ** (1.0 / p)
        gradient_u = level ** (1.0 - p) * abs_u ** (p - 1.0) / self.semi_x
        gradient_v = level ** (1.0 - p) * abs_v ** (p - 1.0) / self.semi_y
        return (level - 1.0) / np.maximum(np.hypot(gradient_u, gradient_v), 1e-9)


@dataclass(frozen=True)
class CurvedSlab:
    """The patient table: a slab of ``thickness_mm`` whose top curves up (anteriorly) at the sides like a cradle."""

    top_y: float
    thickness_mm: float
    half_width_mm: float
    curvature_radius_mm: float

    def moved(self, motion: Motion, position: float, size_factor: float = 1.0) -> "CurvedSlab":
        return self

    def extent_mm(self) -> float:
        return self.half_width_mm + self.thickness_mm + self.top_y

    def signed_distance(self, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
        top = self.top_y - x_mm ** 2 / (2.0 * self.curvature_radius_mm)
        return np.maximum.reduce([top - y_mm, y_mm - top - self.thickness_mm, np.abs(x_mm) - self.half_width_mm])


@dataclass(frozen=True)
class Structure:
    """One row of the anatomy table.

    ``within`` clips the structure to an earlier one; ``sphere`` = (z centre, radius) in mm makes it a ball seen only
    in the slices it crosses; ``above_fraction`` keeps only the part above a horizontal level (gas over fluid in a
    supine patient), given as a fraction of the semi-axis from the centre (negative is anterior).
    """

    name: str
    hu: float
    shape: object
    texture_hu: float = 3.0
    texture_mm: float = 2.5
    within: Optional[str] = None
    motion: Motion = STILL
    sphere: Optional[tuple[float, float]] = None
    above_fraction: Optional[float] = None


LIVER_MOTION = Motion(shift_x_mm=2.0, scale=-0.05)
FINE_GRAIN_MM = 0.7  # trabecular bone
BONE_CORTEX_HU = 1000.0
RIB_CORTEX_HU = 900.0
BLOOD_HU = 160.0


def _kidney(side: int, center_x: float, center_y: float, motion: Motion) -> list[Structure]:
    """A kidney cut near its hilum: perirenal fat, enhanced cortex, three medullary pyramids, sinus fat.

    The long axis runs from posteromedial to anterolateral and the hilum faces anteromedially, as on real CT.
    """
    name = "right kidney" if side < 0 else "left kidney"
    angle = 45.0 if side < 0 else -45.0
    theta = math.radians(angle)
    long_axis = np.array([math.cos(theta), math.sin(theta)])
    toward_hilum = -np.array([-math.sin(theta), math.cos(theta)])  # anteromedial

    def at(along: float, across: float) -> tuple[float, float]:
        point = np.array([center_x, center_y]) + along * long_axis + across * toward_hilum
        return float(point[0]), float(point[1])

    rows = [
        Structure(f"{name} perirenal fat", -95.0, Ellipse(center_x, center_y, 36.0, 26.0, angle), 5.0,
                  within="abdominal cavity", motion=motion),
        Structure(name, 150.0, Ellipse(center_x, center_y, 28.0, 18.0, angle), 4.0, motion=motion),
    ]
    for along in (-14.0, 0.0, 14.0):
        rows.append(Structure(f"{name} medulla", 70.0, Ellipse(*at(along, 2.5), 5.5, 6.5, angle), 3.0,
                              within=name, motion=motion))
    rows += [
        Structure(f"{name} sinus fat", -80.0, Ellipse(*at(0.0, 15.0), 9.0, 8.0, angle), 5.0, within=name,
                  motion=motion),
        Structure(f"{name} renal vein", BLOOD_HU, Ellipse(*at(0.0, 17.0), 3.5, 3.0, angle), 1.0, within=name,
                  motion=motion),
    ]
    return rows


def _rib(name: str, angle_deg: float, hu_cortex: float, hu_marrow: float, drift_mm: float) -> list[Structure]:
    """A rib cut across in the abdominal wall, at parametric angle ``angle_deg`` on the wall's mid-line.

    Ribs slope through the slices, so their cross-sections slide along the wall (``drift_mm`` per unit position).
    """
    semi_x, semi_y, center_y = 144.0, 98.0, 1.0
    theta = math.radians(angle_deg)
    x, y = semi_x * math.cos(theta), center_y + semi_y * math.sin(theta)
    tangent = np.array([-semi_x * math.sin(theta), semi_y * math.cos(theta)])
    tangent /= np.linalg.norm(tangent)
    orientation = math.degrees(math.atan2(tangent[1], tangent[0]))
    motion = Motion(shift_x_mm=drift_mm * tangent[0], shift_y_mm=drift_mm * tangent[1])
    return [
        Structure(name, hu_cortex, Ellipse(x, y, 8.0, 4.5, orientation), 0.0, motion=motion),
        Structure(f"{name} marrow", hu_marrow, Ellipse(x, y, 6.2, 2.8, orientation), 25.0, FINE_GRAIN_MM,
                  motion=motion),
    ]


def _bowel(name: str, shape: Ellipse, content_hu: float, gas_above: Optional[float], motion: Motion = STILL
           ) -> list[Structure]:
    """A bowel loop or the stomach: a 3 mm enhancing wall, fluid content, gas floating on top (anterior)."""
    lumen = Ellipse(shape.center_x, shape.center_y, shape.semi_x - 3.0, shape.semi_y - 3.0, shape.angle_deg)
    rows = [
        Structure(f"{name} wall", 45.0, shape, 3.0, within="abdominal cavity", motion=motion),
        Structure(f"{name} content", content_hu, lumen, 4.0, motion=motion),
    ]
    if gas_above is not None:
        rows.append(Structure(f"{name} gas", AIR_HU, lumen, 0.0, motion=motion, above_fraction=gas_above))
    return rows


def _abdomen() -> list[Structure]:
    """The anatomy table, painted in order (later rows cover earlier ones)."""
    rows = [
        Structure("patient table", 250.0, CurvedSlab(125.0, 14.0, 165.0, 700.0), 0.0),
        Structure("table core", -850.0, CurvedSlab(127.5, 9.0, 162.0, 700.0), 0.0),
        Structure("skin", 30.0, Ellipse(0.0, 0.0, 170.0, 122.0, exponent=2.4), 2.0),
        Structure("subcutaneous fat", -105.0, Ellipse(0.0, 0.0, 167.5, 119.5, exponent=2.4), 5.0),
        Structure("abdominal wall", 50.0, Ellipse(0.0, 4.0, 150.0, 104.0, exponent=2.3), 3.0),
        Structure("abdominal cavity", -95.0, Ellipse(0.0, -2.0, 138.0, 92.0, exponent=2.2), 6.0),
        Structure("right paraspinal muscle", 55.0, Ellipse(-34.0, 90.0, 26.0, 18.0, -10.0), 3.0),
        Structure("left paraspinal muscle", 55.0, Ellipse(34.0, 90.0, 26.0, 18.0, 10.0), 3.0),
        Structure("right crus", 50.0, Ellipse(-24.0, 36.0, 8.0, 14.0, 25.0), 3.0),
        Structure("left crus", 50.0, Ellipse(24.0, 36.0, 8.0, 14.0, -25.0), 3.0),
        # liver: right lobe and the left lobe reaching over the midline
        Structure("liver", LIVER_HU, Ellipse(-62.0, -8.0, 78.0, 72.0, -25.0), 3.0, within="abdominal cavity",
                  motion=LIVER_MOTION),
        Structure("liver left lobe", LIVER_HU, Ellipse(-5.0, -52.0, 50.0, 22.0, 12.0), 3.0,
                  within="abdominal cavity", motion=Motion(shift_y_mm=3.0, scale=-0.2)),
    ]
    rows += _bowel("stomach", Ellipse(65.0, -30.0, 44.0, 30.0, 30.0), 15.0, -0.35, Motion(shift_y_mm=4.0, scale=-0.1))
    rows += [
        Structure("spleen", 50.0, Ellipse(108.0, 32.0, 30.0, 52.0, -30.0), 3.0, within="abdominal cavity",
                  motion=Motion(shift_x_mm=3.0, scale=-0.12)),
        Structure("pancreas", 45.0, Ellipse(30.0, 6.0, 42.0, 9.0, -22.0), 4.0, within="abdominal cavity",
                  motion=Motion(shift_y_mm=3.0, scale=-0.1)),
        Structure("splenic vein", BLOOD_HU, Ellipse(34.0, 14.0, 30.0, 3.0, -22.0), 1.0,
                  motion=Motion(shift_y_mm=3.0, scale=-0.1)),
    ]
    rows += _kidney(-1, -66.0, 50.0, Motion(shift_y_mm=-2.0, scale=0.12))
    rows += _kidney(+1, 68.0, 46.0, Motion(shift_y_mm=-2.0, scale=0.06))
    rows += _bowel("hepatic flexure", Ellipse(-100.0, -62.0, 16.0, 13.0, 20.0), 20.0, 0.2,
                   Motion(shift_x_mm=3.0))
    rows += _bowel("transverse colon", Ellipse(40.0, -78.0, 22.0, 11.0, -5.0), 20.0, 0.5)
    rows += _bowel("splenic flexure", Ellipse(120.0, -34.0, 12.0, 15.0, 10.0), 20.0, 0.0)
    rows += _bowel("duodenum", Ellipse(-44.0, 18.0, 11.0, 9.0, 20.0), 20.0, -0.5, Motion(shift_y_mm=2.0))
    rows += [
        Structure("gallbladder", 10.0, Ellipse(-28.0, -24.0, 16.0, 11.0, 35.0), 1.0, motion=LIVER_MOTION),
        Structure("portal vein", BLOOD_HU, Ellipse(-20.0, 4.0, 10.0, 7.0, -30.0), 1.0, motion=LIVER_MOTION),
        Structure("hepatic vein", 150.0, Ellipse(-42.0, -48.0, 4.0, 4.0), 1.0, within="liver", motion=LIVER_MOTION),
        Structure("hepatic vein", 150.0, Ellipse(-122.0, 14.0, 3.0, 3.0), 1.0, within="liver", motion=LIVER_MOTION),
        Structure("hepatic vein", 150.0, Ellipse(-82.0, 24.0, 3.5, 3.5), 1.0, within="liver", motion=LIVER_MOTION),
        Structure("portal branch", BLOOD_HU, Ellipse(-52.0, -12.0, 3.5, 3.0, 40.0), 1.0, within="liver",
                  motion=LIVER_MOTION),
        # liver lesions: the large hypodense one is in every slice (it carries the "lesion" ROI); the others are
        # spheres that come and go through the slices
        Structure("hypodense lesion 15 mm", LIVER_HU - 20.0, Ellipse(-72.0, -34.0, 7.5, 7.5), 2.0, within="liver",
                  motion=Motion(scale=-0.1)),
        Structure("hypodense lesion 10 mm", LIVER_HU - 30.0, Ellipse(-118.0, -22.0, 5.0, 5.0), 2.0, within="liver",
                  sphere=(-4.0, 5.0)),
        Structure("hypodense lesion 7 mm", LIVER_HU - 15.0, Ellipse(-92.0, 8.0, 3.5, 3.5), 2.0, within="liver",
                  sphere=(5.0, 3.5)),
        Structure("hyperdense lesion 10 mm", LIVER_HU + 60.0, Ellipse(-20.0, -56.0, 5.0, 5.0), 2.0,
                  within="liver left lobe", sphere=(0.0, 5.0)),
        # great vessels
        Structure("inferior vena cava", 150.0, Ellipse(-25.0, 26.0, 12.0, 9.0, 10.0), 1.5),
        Structure("aorta", 180.0, Ellipse(5.0, 18.0, 11.0, 11.0), 1.5),
        Structure("aortic wall calcification", 600.0, Ellipse(-3.0, 26.0, 2.0, 1.2, 45.0), 0.0, sphere=(2.0, 2.5)),
        # spine (lumbar vertebra): posterior arch first, then the vertebral body over it
        Structure("neural arch", 700.0, Ellipse(0.0, 82.0, 16.0, 12.0), 0.0),
        Structure("right transverse process", 700.0, Ellipse(-24.0, 84.0, 13.0, 4.0, 15.0), 0.0),
        Structure("left transverse process", 700.0, Ellipse(24.0, 84.0, 13.0, 4.0, -15.0), 0.0),
        Structure("spinous process", 750.0, Ellipse(0.0, 98.0, 4.0, 11.0), 0.0),
        Structure("arch marrow", 250.0, Ellipse(0.0, 82.0, 13.5, 9.5), 25.0, FINE_GRAIN_MM),
        Structure("spinal canal", 25.0, Ellipse(0.0, 78.0, 9.5, 8.0), 2.0),
        Structure("vertebral body", BONE_CORTEX_HU, Ellipse(0.0, 50.0, 23.0, 20.0), 0.0),
        Structure("cancellous bone", 200.0, Ellipse(0.0, 50.0, 21.3, 18.3), 25.0, FINE_GRAIN_MM),
    ]
    for side, sign in (("right", -1.0), ("left", 1.0)):
        for number, angle in enumerate((125.0, 152.0, 178.0, 203.0), start=1):
            parametric = angle if sign < 0 else 180.0 - angle
            rows += _rib(f"{side} rib {number}", parametric, RIB_CORTEX_HU, 200.0, 8.0)
        costal = 228.0 if sign < 0 else -48.0
        rows += _rib(f"{side} costal cartilage", costal, 160.0, 120.0, 6.0)
    return rows


ANATOMY = tuple(_abdomen())

# regions of interest in mm: (centre x, centre y, width, height); chosen to stay homogeneous in every slice
ROI_TABLE_MM = {
    "liver": (-100.0, -12.0, 20.0, 20.0),
    "lesion": (-72.0, -34.0, 8.0, 8.0),
    "spleen": (112.0, 36.0, 12.0, 20.0),
    "fat": (0.0, -110.0, 30.0, 10.0),
    "muscle": (-38.0, 92.0, 16.0, 10.0),
    "aorta": (5.0, 18.0, 10.0, 10.0),
}


def _pixel_grid(size: int, pixel_mm: float) -> np.ndarray:
    """Pixel-centre coordinates in mm, 0 at the image centre."""
    return (np.arange(size) - (size - 1) / 2.0) * pixel_mm


def _check_geometry(size: int, pixel_mm: float) -> None:
    if not (size >= 16 and pixel_mm > 0.0 and math.isfinite(pixel_mm)):
        raise LDCTDenoiseError(f"The phantom needs at least 16 pixels of positive size, got {size} x {pixel_mm} mm.")
    if size * pixel_mm < MIN_FIELD_OF_VIEW_MM:
        raise LDCTDenoiseError(
            f"A {size}-pixel slice of {pixel_mm} mm is only {size * pixel_mm:.0f} mm wide; the 340 mm abdomen needs "
            f"at least {MIN_FIELD_OF_VIEW_MM:.0f} mm (pixel_mm >= {MIN_FIELD_OF_VIEW_MM / size:.3f} for {size} px)."
        )


@dataclass
class _SliceCanvas:
    """One slice being painted: HU, texture amplitudes per correlation length, and the masks parents need."""

    coordinates: np.ndarray
    pixel_mm: float
    hu: np.ndarray
    texture: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)

    def paint(self, structure: Structure, shape, keep_mask: bool) -> None:
        reach = shape.extent_mm() + 3.0 * self.pixel_mm
        center_x = getattr(shape, "center_x", 0.0)
        center_y = getattr(shape, "center_y", 0.0)
        columns = self._window(center_x - reach, center_x + reach)
        rows = self._window(center_y - reach, center_y + reach)
        if columns.start >= columns.stop or rows.start >= rows.stop:
            return
        y_mm, x_mm = np.meshgrid(self.coordinates[rows], self.coordinates[columns], indexing="ij")
        edge_sigma = max(EDGE_BLUR_MM, 0.5 * self.pixel_mm)
        mask = 0.5 * erfc(shape.signed_distance(x_mm, y_mm) / (edge_sigma * math.sqrt(2.0)))
        if structure.above_fraction is not None:
            level = shape.center_y + structure.above_fraction * shape.semi_y
            mask *= 0.5 * erfc((y_mm - level) / (edge_sigma * math.sqrt(2.0)))
        if structure.within is not None:
            mask *= self.masks[structure.within][rows, columns]
        window = (rows, columns)
        self.hu[window] += mask * (structure.hu - self.hu[window])
        for length, amplitude in self.texture.items():
            target = structure.texture_hu if length == structure.texture_mm else 0.0
            amplitude[window] += mask * (target - amplitude[window])
        if keep_mask:
            full = np.zeros_like(self.hu)
            full[window] = mask
            self.masks[structure.name] = full

    def _window(self, low_mm: float, high_mm: float) -> slice:
        first = int(np.searchsorted(self.coordinates, low_mm))
        last = int(np.searchsorted(self.coordinates, high_mm, side="right"))
        return slice(max(first, 0), min(last, self.coordinates.size))


def _slice_position(z_mm: float) -> float:
    return math.tanh(z_mm / Z_VARIATION_MM)


def _paint_slice(z_mm: float, size: int, pixel_mm: float, texture_lengths: list[float]) -> _SliceCanvas:
    canvas = _SliceCanvas(_pixel_grid(size, pixel_mm), pixel_mm, np.full((size, size), AIR_HU),
                          {length: np.zeros((size, size)) for length in texture_lengths})
    parents = {structure.within for structure in ANATOMY if structure.within}
    position = _slice_position(z_mm)
    for structure in ANATOMY:
        size_factor = 1.0
        if structure.sphere is not None:
            sphere_z, radius = structure.sphere
            if abs(z_mm - sphere_z) >= radius:
                continue
            size_factor = math.sqrt(1.0 - ((z_mm - sphere_z) / radius) ** 2)
        shape = structure.shape.moved(structure.motion, position, size_factor)
        canvas.paint(structure, shape, keep_mask=structure.name in parents)
    return canvas


def make_abdomen_phantom(
    n_slices: int = 8, size: int = 512, pixel_mm: float = 0.7, seed: int = 0
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Float32 HU volume (z, y, x) of an adult abdomen and its spacing (z, y, x) in mm (3 mm slices).

    The field of view (``size`` x ``pixel_mm``) must hold the 340 mm body; ``seed`` sets the tissue texture only.
    """
    if n_slices < 1:
        raise LDCTDenoiseError(f"The phantom needs at least one slice, got {n_slices}.")
    _check_geometry(size, pixel_mm)
    texture_lengths = sorted({structure.texture_mm for structure in ANATOMY})
    hu = np.empty((n_slices, size, size))
    amplitudes = {length: np.empty((n_slices, size, size)) for length in texture_lengths}
    for index in range(n_slices):
        z_mm = (index - (n_slices - 1) / 2.0) * SLICE_SPACING_MM
        canvas = _paint_slice(z_mm, size, pixel_mm, texture_lengths)
        hu[index] = canvas.hu
        for length in texture_lengths:
            amplitudes[length][index] = canvas.texture[length]
    rng = np.random.default_rng(seed)
    for length in texture_lengths:
        grain = gaussian_filter(rng.standard_normal(hu.shape),
                                (length / SLICE_SPACING_MM, length / pixel_mm, length / pixel_mm), mode="wrap")
        hu += amplitudes[length] * grain / grain.std()
    return hu.astype(np.float32), (SLICE_SPACING_MM, float(pixel_mm), float(pixel_mm))


def phantom_rois(size: int = 512, pixel_mm: float = 0.7) -> dict[str, Roi]:
    """Regions of interest for a phantom made with the same ``size`` and ``pixel_mm``, valid in every slice.

    "liver" is homogeneous parenchyma (noise SD), "lesion" lies inside the 15 mm hypodense lesion (-20 HU, for
    CNR against "liver"), "spleen", "fat" (anterior subcutaneous), "muscle" (paraspinal) and "aorta" (enhanced blood).
    """
    _check_geometry(size, pixel_mm)
    center = (size - 1) / 2.0
    rois = {}
    for name, (center_x, center_y, width_mm, height_mm) in ROI_TABLE_MM.items():
        width = max(2, round(width_mm / pixel_mm))
        height = max(2, round(height_mm / pixel_mm))
        column = round(center + center_x / pixel_mm - (width - 1) / 2.0)
        row = round(center + center_y / pixel_mm - (height - 1) / 2.0)
        rois[name] = Roi(column, row, width, height)
    return rois
