"""The one entry point of the cross-domain adaptation: :func:`adapt` fine-tunes a denoiser on unlabeled target scans.

It follows Huang et al., "Cross domain low-dose CT image denoising with semantic information alignment": the
denoiser's outputs pass through a random frequency mask (DCT, radial mask from a variational latent, inverse DCT), a
discriminator tells masked source from masked target images, and the denoiser minimises
L_all = w_adv·L_adv + λ0·L_rec + λ1·L_per (+ w_anchor·L_anchor), λ0 = 0.67 and λ1 = 0.33 as the paper.

Where the paper is vague we chose as follows; each choice is a field of :class:`AdaptationConfig` so an ablation
can flip it.

- What the discriminator sees (``discriminator_real``): the *denoiser outputs* after the mask, source output as
  "real" and target output as "fake" (default "source_output"), because only outputs carry a gradient back to the
  denoiser (masked inputs would align nothing) and two outputs of the same network differ only by the domain, as in
  the co-author's executable RFM code (tonyckc/UDA-BUA-code). "source_reference" uses the masked normal-dose source
  image instead, the literal eq. 9 (outputs should look like normal dose). Only the target output is pushed by the
  adversarial term; the source output is held by L_rec.
- How the latent becomes a mask: see ``frequency_mask.py`` (one latent per radial band, keep probability sigmoid(z),
  one draw per source/target pair so the mask is no domain cue, DC always kept). ``mask`` picks the ablation
  variant: "none", "fixed" (radial low-pass at ``fixed_cutoff``), "bernoulli" (Yue et al.'s RFM: above the cutoff
  each coefficient is kept with ``bernoulli_keep``), "adaptive".
- Who trains the mask encoder (``mask_learner``): the discriminator side by default, so the masks concentrate the
  critic on the frequency bands where the domains still differ and the denoiser has to align those; the KL term
  keeps the mask random, which stops the critic from winning on one fixed band. "denoiser" gives the paper's other
  reading (the mask keeps what the domains share).
- How the adversarial term weighs the others (``adversarial_weight``): a separate scale on L_adv, with λ0 and λ1
  splitting fidelity between pixels and features (λ0 = 1 - λ1 as the paper). The paper's literal weight 1 on a
  log-loss beside an MSE on [0, 1]-scaled images (about 2e-5 for a trained denoiser) is no balance at all: near its
  optimum the reconstruction's gradient vanishes while the critic's does not, and Adam turns any persistent gradient
  into full-size steps. The default 0.0005 is the best weight measured on a large simulated shift; larger ones lost
  dB or destroyed the images (docs/measurements.md, "Adaptation's weights and schedule").
- What the critic sees (``critic_scale_hu``): the masked image with its patch mean removed, in units of 100 HU. In
  raw model units (HU/4096) the domains differ by texture a thousandth of the input range, and in the raw runs
  whose losses we logged (L109 and phantom targets) the critic's loss stayed at chance (ln 4); in HU units it has
  the grip the weight study above shows (0 = raw).
- Learning-rate schedule (``learning_rate_schedule``): the denoiser's rate falls to 0 along a cosine ("cosine"),
  because the last step's weights are what the user gets: at a constant rate, held-out PSNR swung between
  checkpoints a few steps apart (docs/measurements.md).
- Fine-tuning rates: the denoiser's ``learning_rate`` (5e-5) is a sixth of the supervised peak rate, so a few
  hundred steps can move the model but not undo its training; the critic and the encoder learn faster.
- The source signal (``source`` argument): the Mayo images cannot ship, so by default the source pairs are simulated
  on the user's machine from the digital phantom with the protocol calibrated to the shipped model's domain
  (``source.py``), and the target outputs are anchored to the starting model by a small MSE (``anchor_weight``)
  because the phantom's anatomy is simpler than a patient's: the anchor stops the alignment from pulling real
  anatomy towards the phantom's. Research runs pass explicit pairs (e.g. Mayo) and may set the anchor to 0.
- Target-noise matching (``match_target_noise``, ``noise_matching.py``), our addition to the paper: the source
  low-dose patches get extra noise so that their noise power spectrum matches the one estimated from the unlabeled
  target scans. It is what moves a denoiser to a noisier scanner or a lower dose, which the alignment cannot; with
  ``adversarial_weight`` 0 it is noise-matched fine-tuning (the product's default method, ``ADAPTATION_METHODS``,
  which keeps the anchor for the phantom pairs).
- Recorruption (``recorruption_weight``, ``recorruption.py``), the third method: the target scans alone, each patch
  re-noised with its series' own measured noise; no source pairs, so none are built.
- Held-out slices (``holdout_share``, every product method): that share of each target series is left out of
  training, and on it :func:`gain.estimate_gain` compares the adapted model with ``model`` without a reference; the
  front ends keep ``model`` unless the gain is clear (``AdaptationResult.keep_adapted``).
- The perceptual loss needs ImageNet VGG-19 weights, which cannot be downloaded: with no local file it is off, with
  a warning, and the card says so.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .. import __version__
from ..body import body_outline
from ..errors import LDCTDenoiseError
from ..inference import select_device
from ..normalization import HU_RANGE, hu_to_model
from ..progress import CancelCheck, ProgressCallback, check_cancel, report
from .discriminator import AlignmentDiscriminator, discriminator_loss, generator_loss
from .frequency_mask import FrequencyMask, apply_mask
from .gain import GainEstimate, estimate_gain
from .noise_matching import NoiseMatcher, estimate_nps_2d
from .patches import BodyPatchSampler
from .perceptual import PerceptualLoss
from .recorruption import Recorruptor, split_holdout
from .settings import (ADAPTATION_METHODS, ALIGNMENT, DEFAULT_METHOD, DISCRIMINATOR_REAL, GAN_LOSSES,
                       LEARNING_RATE_SCHEDULES, MASK_KINDS, MASK_LEARNERS, NOISE_MATCHING, RECORRUPTION,
                       AdaptationConfig, describe_method, method_settings, used_loss_terms)
from .source import SourcePairs, phantom_source_bank
from .target_noise import TargetNoise, check_draws

__all__ = ["ADAPTATION_METHODS", "ALIGNMENT", "DEFAULT_METHOD", "DISCRIMINATOR_REAL", "GAN_LOSSES",
           "LEARNING_RATE_SCHEDULES", "MASK_KINDS", "MASK_LEARNERS", "NOISE_MATCHING", "RECORRUPTION",
           "AdaptationConfig",
           "AdaptationResult", "adapt", "checked_target_volumes", "describe_method", "method_settings",
           "used_loss_terms"]

ADAM_BETAS = (0.5, 0.999)
DEFAULT_PIXEL_MM = 0.7  # a target's pixel size when the caller does not give it (the Mayo series: 0.66-0.82 mm)


@dataclass
class AdaptationResult:
    """The adapted copy of the model (CPU, eval mode), its card for ``save_model``, one loss row per step, and the
    label-free estimate of its gain over the starting model (None without held-out slices)."""

    model: torch.nn.Module
    card: dict
    history: list[dict] = field(default_factory=list)
    gain: Optional[GainEstimate] = None

    @property
    def keep_adapted(self) -> bool:
        """False when held-out slices showed no clear gain: the front ends then keep the starting model."""
        return self.gain is None or self.gain.keep_adapted

    def gain_sentence(self, start_name: str) -> str:
        """What the front ends tell the user about the gain: the estimate, or why there is none (empty when no
        slices were meant to be held out)."""
        if self.gain is not None:
            return self.gain.sentence(start_name)
        reason = self.card.get("validation", {}).get("estimated_gain", {}).get("unavailable")
        return (f"No estimate of the gain without a reference: {reason}. Compare the profile with {start_name} "
                f"before using it." if reason else "")


def checked_target_volumes(target_volumes: np.ndarray | Sequence[np.ndarray], patch_size: int,
                           noise_regions: bool = False) -> list[np.ndarray]:
    """The loaded scans as float32 (z, y, x) HU arrays, without copying those that already are; each slice must
    hold a training patch. With ``noise_regions`` each scan must also hold the flat soft tissue that noise matching
    measures (about 20 ms per 512² slice), so a front end can refuse it before starting a long run."""
    volumes = [target_volumes] if isinstance(target_volumes, np.ndarray) else list(target_volumes)
    if not volumes:
        raise LDCTDenoiseError("Adaptation needs at least one target volume.")
    checked = []
    for index, volume in enumerate(volumes):
        volume = np.asarray(volume, np.float32)
        volume = volume[None] if volume.ndim == 2 else volume
        if volume.ndim != 3:
            raise LDCTDenoiseError(f"Target volume {index} has shape {volume.shape}; expected (z, y, x) HU.")
        if not np.isfinite(volume).all():
            raise LDCTDenoiseError(f"Target volume {index} contains NaN or infinite values.")
        if min(volume.shape[1:]) < patch_size:
            raise LDCTDenoiseError(f"Target volume {index} has slices of {volume.shape[2]} x {volume.shape[1]} px, "
                                   f"smaller than the {patch_size} px training patches.")
        checked.append(volume)
    if noise_regions:
        estimate_nps_2d(checked, patch_size)
    return checked


def _to_model(patches: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(hu_to_model(patches)).to(device)


def adapt(model: torch.nn.Module, target_volumes: np.ndarray | Sequence[np.ndarray],
          config: Optional[AdaptationConfig] = None,
          source: Optional[SourcePairs | tuple[np.ndarray, np.ndarray]] = None,
          progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
          on_step: Optional[Callable[[dict], None]] = None,
          monitor: Optional[Callable[[torch.nn.Module], dict]] = None, monitor_every: int = 0,
          target_pixel_mm: Optional[Sequence[float]] = None) -> AdaptationResult:
    """Adapt a copy of ``model`` to the unlabeled ``target_volumes`` (float32 HU, (z, y, x)); ``model`` is untouched.

    ``source`` gives explicit (low-dose, normal-dose) HU pairs; without it the phantom bank of ``source.py`` is built
    (or read from its cache; build it beforehand with :func:`phantom_source_bank` to show that step's progress),
    unless the settings use no source pairs (recorruption). ``target_pixel_mm`` gives each target's pixel size for
    its noise model (recorruption and the gain estimate; 0.7 mm when not given). With ``config.holdout_share`` that
    share of each target's slices is left out of training and the gain over ``model`` estimated on it
    (``AdaptationResult.gain``).
    ``progress(step, steps)`` is called after every step and ``cancel()`` checked before each one
    (:class:`CancelledError`); ``on_step(row)`` receives each step's losses, for a live loss curve.
    ``monitor(denoiser)`` (eval mode, no gradients) runs every ``monitor_every`` steps and its numbers join that
    step's row, so research runs can follow a labelled metric along the run. Runs on CUDA when present
    (``config.device``); on the CPU a seed gives one result. A row holds the step, the terms of
    :func:`used_loss_terms`, the mask's mean keep rate ``mask_keep`` when the critic sees masked images, and the
    monitor's numbers.
    """
    config = config or AdaptationConfig()
    all_targets = checked_target_volumes(target_volumes, config.patch_size)
    pixel_mm = [float(size) for size in target_pixel_mm] if target_pixel_mm else [DEFAULT_PIXEL_MM] * len(all_targets)
    if len(pixel_mm) != len(all_targets):
        raise LDCTDenoiseError(f"Got {len(pixel_mm)} pixel sizes for {len(all_targets)} target volumes.")
    noises: list[Optional[TargetNoise]] = [None] * len(all_targets)
    holdout_share, no_gain_reason = config.holdout_share, ""
    if config.recorruption_weight > 0 or holdout_share > 0:
        try:
            noises = [TargetNoise.of(volume, size) for volume, size in zip(all_targets, pixel_mm)]
        except LDCTDenoiseError as error:
            if config.recorruption_weight > 0:
                raise
            # the gain cannot be estimated without the noise model: train on every slice and say so
            no_gain_reason = f"the target scans' noise could not be measured: {error}"
            holdout_share = 0.0
        unreliable = [index + 1 for index, noise in enumerate(noises)
                      if noise is not None and not noise.estimate.reliable]
        if unreliable and config.recorruption_weight == 0 and holdout_share > 0:
            # SURE would rest on a noise level that may be off by 1.7x (Mayo B30 full dose): no estimate, and say so
            no_gain_reason = (f"the noise of target series {', '.join(map(str, unreliable))} could not be told apart "
                              f"from the anatomy (a smooth kernel at a low noise level)")
            holdout_share = 0.0
    if no_gain_reason:
        warnings.warn(f"No estimate of the gain: {no_gain_reason}", UserWarning, stacklevel=2)
    targets, held_out, held_out_slices = split_holdout(all_targets, holdout_share)
    if holdout_share > 0 and not any(len(volume) for volume in held_out):
        no_gain_reason = "every target series has fewer than 3 slices, so none could be held out"
    recorruptor, noise_checks = None, []
    if config.recorruption_weight > 0:
        noise_checks = [check_draws(noise, volume, config.seed, f"target series {index + 1}")
                        for index, (noise, volume) in enumerate(zip(noises, all_targets))]
        recorruptor = Recorruptor(noises, config.recorruption_alpha)
    if not config.uses_source:
        source = None
    elif source is None:
        source = phantom_source_bank(config.source_slices, config.source_size, config.source_pixel_mm,
                                     config.source_seed, cancel=cancel)
    elif not isinstance(source, SourcePairs):
        source = SourcePairs(*source)
    device = select_device(config.device)
    rng = np.random.default_rng(config.seed)
    source_sampler = (BodyPatchSampler([(source.low_dose, source.normal_dose)], config.patch_size, rng, body_from=1)
                      if source is not None else None)
    # With recorruption each target patch comes with its noise level map, cut, flipped and rotated alike, and is
    # centred anywhere inside the filled outline of everything denser than air: the model learns from the scans
    # alone, so lungs and the table must be seen too (centres inside the patient's outline only left the table to
    # drift; docs/measurements.md).
    target_sampler = BodyPatchSampler([(volume, noise.levels[np.setdiff1d(np.arange(len(noise.levels)), picks)])
                                       if recorruptor is not None else (volume,)
                                       for volume, noise, picks in zip(targets, noises, held_out_slices)],
                                      config.patch_size, rng, body_from=0,
                                      centre_masks=[body_outline(volume) for volume in targets]
                                      if recorruptor is not None else None)

    perceptual = None
    if config.perceptual_weights and source is not None:
        perceptual = PerceptualLoss(config.perceptual_weights, config.perceptual_layer).to(device)
        perceptual_card = perceptual.card()
    elif source is None:
        perceptual_card = {"enabled": False, "reason": "no source pairs are used"}
    else:
        warnings.warn("No VGG-19 weights file given: the perceptual loss is off (lambda_per ignored); the model "
                      "card records it.", UserWarning, stacklevel=2)
        perceptual_card = {"enabled": False, "reason": "no local VGG-19 (ImageNet) weights file was given"}

    denoiser = copy.deepcopy(model).to(device).train()
    denoiser.requires_grad_(True)
    anchor = copy.deepcopy(model).to(device).eval().requires_grad_(False) if config.anchor_weight > 0 else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        discriminator = AlignmentDiscriminator().to(device)
        mask = FrequencyMask(config.mask, config.mask_bands, config.fixed_cutoff, config.bernoulli_keep,
                             config.mask_binary).to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    matcher = (NoiseMatcher([source.low_dose], targets, config.patch_size, device)
               if config.match_target_noise and source is not None else None)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=config.learning_rate, betas=ADAM_BETAS)
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.discriminator_learning_rate,
                                               betas=ADAM_BETAS)
    encoder_optimizer = (torch.optim.Adam(mask.parameters(), lr=config.encoder_learning_rate, betas=ADAM_BETAS)
                         if config.mask == "adaptive" else None)
    encoder_with_critic = config.mask_learner == "discriminator"
    # Without the adversarial term the critic and the mask encoder cannot change the denoiser: skip their work (faster,
    # and bit-identical weights; docs/measurements.md).
    critic = config.adversarial_weight > 0

    def masked(image: torch.Tensor, frequency_mask: torch.Tensor) -> torch.Tensor:
        """What the critic sees: the masked image, optionally as texture in units of ``critic_scale_hu``."""
        image = image if config.mask == "none" else apply_mask(image, frequency_mask)
        if config.critic_scale_hu > 0:
            image = (image - image.mean(dim=(-2, -1), keepdim=True)) * (HU_RANGE / config.critic_scale_hu)
        return image

    lambda_per = config.lambda_per if perceptual is not None else 0.0
    reported = used_loss_terms(config)
    if critic and config.mask != "none":
        reported += ("mask_keep",)  # the share of the spectrum the critic sees; no loss, so no loss curve draws it

    history: list[dict] = []
    tic = time.perf_counter()
    for step in range(1, config.steps + 1):
        check_cancel(cancel)
        if config.learning_rate_schedule == "cosine":  # from learning_rate at step 1 to 0 at the last step
            progress_share = (step - 1) / max(config.steps - 1, 1)
            optimizer.param_groups[0]["lr"] = config.learning_rate * 0.5 * (1.0 + np.cos(np.pi * progress_share))
        zero = torch.zeros((), device=device)
        if source_sampler is not None:
            low_source, normal_source = (torch.from_numpy(p).to(device)
                                         for p in source_sampler.sample(config.batch_size))
            if matcher is not None:
                low_source = matcher(low_source, generator)
            low_source, normal_source = hu_to_model(low_source), hu_to_model(normal_source)
        target_patches, target_stacks = target_sampler.sample_with_stacks(config.batch_size)
        target_hu = torch.from_numpy(target_patches[0]).to(device)
        low_target = hu_to_model(target_hu)
        if source_sampler is not None:
            output_source, output_target = denoiser(low_source), denoiser(low_target)
            with torch.set_grad_enabled(critic):  # drawn without the critic too, so its runs share the random stream
                pair_mask, kl = mask([low_source, low_target], generator)
        else:
            output_target = denoiser(low_target) if anchor is not None else None
            pair_mask, kl = torch.ones((), device=device), zero
        if recorruptor is not None:
            levels = torch.from_numpy(target_patches[1]).to(device)
            recorruption = recorruptor.loss(denoiser, *recorruptor.pairs(target_hu, levels, target_stacks, generator))
        else:
            recorruption = zero

        if critic:  # critic step (with the mask encoder when it plays on the critic's side)
            real = normal_source if config.discriminator_real == "source_reference" else output_source.detach()
            critic_mask = pair_mask if encoder_with_critic else pair_mask.detach()
            discriminator.requires_grad_(True)
            critic_loss = discriminator_loss(discriminator(masked(real, critic_mask)),
                                             discriminator(masked(output_target.detach(), critic_mask)),
                                             config.gan_loss)
            discriminator_optimizer.zero_grad(set_to_none=True)
            if encoder_optimizer is not None:
                encoder_optimizer.zero_grad(set_to_none=True)
            (critic_loss + (config.kl_weight * kl if encoder_with_critic else 0.0)).backward()
            discriminator_optimizer.step()
            if encoder_optimizer is not None and encoder_with_critic:
                encoder_optimizer.step()
            discriminator.requires_grad_(False)
            denoiser_mask = pair_mask.detach() if encoder_with_critic else pair_mask
            adversarial = generator_loss(discriminator(masked(output_target, denoiser_mask)), config.gan_loss)
        else:
            critic_loss = adversarial = zero

        # denoiser step: L_all = w_adv·L_adv + λ0·L_rec + λ1·L_per + w_anchor·L_anchor (+ w_r2r·L_recorruption)
        reconstruction = F.mse_loss(output_source, normal_source) if source_sampler is not None else zero
        perceptual_loss = perceptual(output_source, normal_source) if perceptual is not None else torch.zeros(())
        if anchor is not None:
            with torch.no_grad():
                anchored = anchor(low_target)
            anchor_loss = F.mse_loss(output_target, anchored)
        else:
            anchor_loss = torch.zeros((), device=device)
        total = (config.adversarial_weight * adversarial + config.lambda_rec * reconstruction
                 + lambda_per * perceptual_loss.to(device) + config.anchor_weight * anchor_loss
                 + config.recorruption_weight * recorruption)
        optimizer.zero_grad(set_to_none=True)
        if encoder_optimizer is not None:
            encoder_optimizer.zero_grad(set_to_none=True)
        (total + (config.kl_weight * kl if critic and not encoder_with_critic else 0.0)).backward()
        optimizer.step()
        if encoder_optimizer is not None and critic and not encoder_with_critic:
            encoder_optimizer.step()

        losses = {"loss": total, "recorruption": recorruption, "adversarial": adversarial,
                  "reconstruction": reconstruction,
                  "perceptual": perceptual_loss, "anchor": anchor_loss, "discriminator": critic_loss, "kl": kl,
                  "mask_keep": pair_mask.mean()}
        history.append({"step": step, **{key: losses[key].item() for key in reported}})
        if monitor is not None and monitor_every > 0 and step % monitor_every == 0:
            denoiser.eval()
            with torch.no_grad():
                history[-1].update(monitor(denoiser))
            denoiser.train()
        if on_step is not None:
            on_step(history[-1])
        report(progress, step, config.steps)
    wall_time = time.perf_counter() - tic

    denoiser = denoiser.eval()
    gain = None
    if any(len(volume) for volume in held_out):
        pairs = [(volume, noise, size) for volume, noise, size in zip(held_out, noises, pixel_mm) if len(volume)]
        # the held-out slices' own rows of each level map
        held_noises = [_held_out_noise(noise, picks) for noise, picks in zip(noises, held_out_slices) if len(picks)]
        started = time.perf_counter()
        gain = estimate_gain(model, denoiser, [volume for volume, _, _ in pairs], held_noises,
                             [size for _, _, size in pairs], device, seed=config.seed, cancel=cancel)
        gain.details["wall_time_s"] = round(time.perf_counter() - started, 1)
    denoiser = denoiser.cpu()
    n_slices = int(sum(volume.shape[0] for volume in targets))
    source_card = source.card() if source is not None else {"kind": "none (the target scans alone)"}
    card = {
        "name": config.name,
        "description": config.description or (
            f"CPCE-2D adapted{' from ' + config.base_model if config.base_model else ''} to {len(targets)} unlabeled "
            f"series ({n_slices} slices); method: {describe_method(config)}"),
        "training": {
            "method": describe_method(config),
            "code": "LDCTDenoiseLib.adaptation.adapt",
            "engine_version": __version__,
            "base_model": config.base_model,
            "config": asdict(config),
            "optimizer": f"Adam betas {ADAM_BETAS}; the denoiser's rate {config.learning_rate_schedule}, the "
                         f"critic's and the encoder's constant",
            "patch_sampling": "centres inside the body (> -500 HU) in both domains, flips and 90-degree rotations",
            "source": source_card,
            "target_noise_matching": matcher.card if matcher is not None else {"enabled": False},
            "recorruption": ({**recorruptor.card(), "noise_checks": noise_checks} if recorruptor is not None
                             else {"enabled": False}),
            "held_out": {"share": config.holdout_share,
                         "slices": [picks.tolist() for picks in held_out_slices]},
            "target": {"volumes": len(targets), "slices": n_slices,
                       "slice_shapes": sorted({f"{v.shape[1]}x{v.shape[2]}" for v in targets}),
                       "labels": "none (unlabeled low-dose scans)"},
            "domains": [f"source: {source_card.get('kind', 'pairs')}",
                        f"target: {len(targets)} unlabeled series, {n_slices} slices"],
            "perceptual": perceptual_card,
            "steps_done": config.steps,
            "wall_time_s": round(wall_time, 1),
            "steps_per_s": round(config.steps / max(wall_time, 1e-9), 3),
            "device": str(device),
            "torch_version": torch.__version__,
        },
        "losses": {"recorruption_mse": config.recorruption_weight,
                   "adversarial": config.adversarial_weight, "reconstruction_mse": config.lambda_rec,
                   "perceptual_vgg19": lambda_per, "anchor_mse": config.anchor_weight, "kl": config.kl_weight,
                   "gan_loss": config.gan_loss},
        "validation": ({"estimated_gain": gain.summary()} if gain is not None else
                       {"estimated_gain": {"kept": "adapted", "unavailable": no_gain_reason}} if no_gain_reason
                       else {}),
        "command": config.command,
    }
    return AdaptationResult(denoiser, card, history, gain)


def _held_out_noise(noise: TargetNoise, picks: np.ndarray) -> TargetNoise:
    """The noise model of a series, its level map cut to the held-out slices (in their order)."""
    held = copy.copy(noise)
    held.levels = noise.levels[picks]
    return held
