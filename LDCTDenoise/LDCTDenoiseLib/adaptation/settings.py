"""The adaptation's methods and settings, without torch: what the command line, the Slicer panel and the report list
or configure (``ldct-denoise models``, ``--help``, the panel's method menu) must not wait for torch to load.

:data:`ADAPTATION_METHODS` is the one table of the product's methods; :class:`AdaptationConfig` holds every
hyper-parameter of a run (the choices are explained in ``adapt.py``, which trains).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import LDCTDenoiseError

MASK_KINDS = ("none", "fixed", "bernoulli", "adaptive")  # frequency_mask.FrequencyMask's kinds
GAN_LOSSES = ("bce", "lsgan")  # discriminator.py's losses
DEFAULT_PERCEPTUAL_LAYER = 35  # VGG-19's relu5_4 (perceptual.py)
ALIGNMENT = ("semantic information alignment (Huang et al.): adaptive random frequency mask + adversarial alignment "
             "of masked source and target outputs, fine-tuning the denoiser")
NOISE_MATCHING = ("target-noise matching: the source pairs' inputs get the extra noise measured in the unlabeled "
                  "target scans, fine-tuning the denoiser")
RECORRUPTION = ("recorruption from the target scans themselves (Recorrupted-to-Recorrupted): each target patch y "
                "plus alpha z is trained towards y - z/alpha, z a draw of the target's own measured noise, "
                "fine-tuning the denoiser without any source pairs")
# Every method holds out this share of each target series' slices and keeps the adapted model only when SURE on them
# shows a clear gain (gain.py); in training.validate_gain that rule kept the starting model where noise matching
# harmed and the adapted one where it helped (docs/measurements.md, "Adaptation methods").
HOLDOUT_SHARE = 0.15
# The product's ways to adapt, as the settings that differ (the AdaptationConfig defaults are the paper's
# alignment). Noise matching is the front ends' default because it did better than the alignment in both kinds of
# shift in the evaluation report (docs/evaluation/report.md). Both keep the anchor to the starting model, because
# the product's source pairs are the phantom's, and with them the anchor helped (docs/measurements.md).
ADAPTATION_METHODS = {
    "noise-matching": {"match_target_noise": True, "adversarial_weight": 0.0, "anchor_weight": 0.1,
                       "learning_rate": 5e-5, "holdout_share": HOLDOUT_SHARE},
    "alignment": {"match_target_noise": False, "adversarial_weight": 0.0005, "anchor_weight": 0.1,
                  "learning_rate": 5e-5, "holdout_share": HOLDOUT_SHARE},
    # Recorruption's targets carry 1 + 1/alpha² times the scan's noise variance, so its gradients are noisy (a lower
    # rate); its inputs carry 1 + alpha², and a model trained at a higher noise level over-smooths the scan (a small
    # alpha). The values are the best of those measured on the 5 % dose shift (docs/measurements.md).
    "recorruption": {"match_target_noise": False, "adversarial_weight": 0.0, "anchor_weight": 0.0,
                     "lambda_rec": 0.0, "recorruption_weight": 1.0, "recorruption_alpha": 0.5,
                     "learning_rate": 5e-6, "holdout_share": HOLDOUT_SHARE},
}
DEFAULT_METHOD = "noise-matching"
MASK_LEARNERS = ("discriminator", "denoiser")
DISCRIMINATOR_REAL = ("source_output", "source_reference")
LEARNING_RATE_SCHEDULES = ("cosine", "constant")


@dataclass
class AdaptationConfig:
    """Every hyper-parameter of one adaptation run; the card stores all of it."""

    name: str = "adapted"
    description: str = ""
    base_model: str = ""
    command: str = ""
    steps: int = 300
    batch_size: int = 16
    patch_size: int = 64
    learning_rate: float = 5e-5
    learning_rate_schedule: str = "cosine"
    discriminator_learning_rate: float = 1e-4
    encoder_learning_rate: float = 1e-3
    lambda_rec: float = 0.67
    lambda_per: float = 0.33
    adversarial_weight: float = 0.0005
    anchor_weight: float = 0.1
    kl_weight: float = 0.01
    mask: str = "adaptive"
    mask_bands: int = 8
    mask_binary: bool = False
    fixed_cutoff: float = 0.5
    bernoulli_keep: float = 0.5
    mask_learner: str = "discriminator"
    discriminator_real: str = "source_output"
    gan_loss: str = "bce"
    critic_scale_hu: float = 100.0
    perceptual_weights: Optional[str] = None
    perceptual_layer: int = DEFAULT_PERCEPTUAL_LAYER
    source_slices: int = 8
    source_size: int = 512
    source_pixel_mm: float = 0.7
    source_seed: int = 0
    match_target_noise: bool = False
    # Recorruption (recorruption.py): weight of its loss on the target patches, and alpha, the share of a noise
    # draw added to the input (its 1/alpha subtracted from the target)
    recorruption_weight: float = 0.0
    recorruption_alpha: float = 0.5
    # The share of each target series' slices held out of training, to estimate the gain without a reference (gain.py)
    holdout_share: float = 0.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        choices = {"mask": (self.mask, MASK_KINDS), "mask_learner": (self.mask_learner, MASK_LEARNERS),
                   "discriminator_real": (self.discriminator_real, DISCRIMINATOR_REAL),
                   "gan_loss": (self.gan_loss, GAN_LOSSES),
                   "learning_rate_schedule": (self.learning_rate_schedule, LEARNING_RATE_SCHEDULES)}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise LDCTDenoiseError(f"Adaptation setting {name}={value!r}; choose one of {', '.join(allowed)}.")
        if self.steps < 1 or self.batch_size < 1 or self.patch_size < 16:
            raise LDCTDenoiseError(f"Adaptation needs steps >= 1, batch_size >= 1 and patch_size >= 16, got "
                                   f"{self.steps}, {self.batch_size}, {self.patch_size}.")
        weights = (self.learning_rate, self.discriminator_learning_rate, self.encoder_learning_rate, self.lambda_rec,
                   self.lambda_per, self.adversarial_weight, self.anchor_weight, self.kl_weight, self.critic_scale_hu,
                   self.recorruption_weight)
        if min(weights) < 0.0:
            raise LDCTDenoiseError("Adaptation learning rates and loss weights must not be negative.")
        if not 0.0 < self.recorruption_alpha <= 4.0:
            raise LDCTDenoiseError(f"recorruption_alpha must be in (0, 4], got {self.recorruption_alpha}.")
        if not 0.0 <= self.holdout_share < 0.5:
            raise LDCTDenoiseError(f"holdout_share must be in [0, 0.5), got {self.holdout_share}.")

    @property
    def uses_source(self) -> bool:
        """Whether a run needs source pairs: their reconstruction term, or the critic that compares the domains."""
        return self.lambda_rec > 0 or self.adversarial_weight > 0


def method_settings(method: str) -> dict:
    """The AdaptationConfig settings of one of :data:`ADAPTATION_METHODS`."""
    if method not in ADAPTATION_METHODS:
        raise LDCTDenoiseError(f"Unknown adaptation method {method!r}; choose one of {', '.join(ADAPTATION_METHODS)}.")
    return dict(ADAPTATION_METHODS[method])


def describe_method(config: AdaptationConfig) -> str:
    """What a run with these settings does, in words, for the model card."""
    parts = [text for text, used in ((RECORRUPTION, config.recorruption_weight > 0),
                                     (NOISE_MATCHING, config.match_target_noise and config.uses_source),
                                     (ALIGNMENT, config.adversarial_weight > 0)) if used]
    return " + ".join(parts) or "fine-tuning on the source pairs alone (no alignment, no noise matching)"


def used_loss_terms(config: AdaptationConfig) -> tuple[str, ...]:
    """The loss terms a run with these settings optimises, the total ("loss") first: what each step reports.

    A term whose weight is 0 is zero or never reaches the model (noise matching's adversarial and critic terms, the
    mask KL without the critic, the perceptual loss without VGG-19 weights): a curve of it would suggest that it
    shaped the model.
    """
    critic = config.adversarial_weight > 0
    weights = {"recorruption": config.recorruption_weight,
               "reconstruction": config.lambda_rec,
               "perceptual": config.lambda_per if config.perceptual_weights and config.uses_source else 0.0,
               "adversarial": config.adversarial_weight,
               "anchor": config.anchor_weight,
               "discriminator": config.adversarial_weight,
               "kl": config.kl_weight if critic and config.mask == "adaptive" else 0.0}
    return ("loss", *(term for term, weight in weights.items() if weight > 0))
