"""Pretraining objectives: SimCLR, BYOL, DINO, MAE and phantom-supervised.

Each method wraps a :class:`~oncosynth.classifiers.model.Classifier` (so the
input normalisation and the exported backbone are exactly what a study's
classifier later loads) and adds the heads its objective needs. The heads and
losses come from lightly, the field's maintained self-supervised library; the
training loop, views and checkpoints are ours (``oncosynth.pretrain.loop``).

A method answers three calls: ``loss(images, generator, step)`` on a batch in
[0, 1], ``after_step(step)`` for momentum teachers, and ``backbone`` for the
weights to export.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from oncosynth.classifiers.augment import AugmentConfig, augment_batch
from oncosynth.classifiers.model import Classifier
from oncosynth.classifiers.normalise import normalise_input
from oncosynth.errors import ConfigError
from oncosynth.pretrain.views import ViewConfig, random_view


class PretrainMethod(nn.Module):
    name: ClassVar[str] = ""
    supervised: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: Classifier, total_steps: int, views: ViewConfig, **options: Any):
        super().__init__()
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ConfigError(f"pretrain method '{self.name}': unknown option(s) {unknown}; "
                              f"known: {sorted(self.defaults)}")
        self.options = {**self.defaults, **options}
        self.model = model
        self.total_steps = total_steps
        self.views = views

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    def loss(self, images: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator,
             step: int) -> torch.Tensor:
        raise NotImplementedError  # every registered method overrides it

    def after_step(self, step: int) -> None:
        """Called after each optimiser step (momentum teachers update here)."""


def _momentum(step: int, total: int, start: float) -> float:
    """The cosine schedule of BYOL/DINO teachers: ``start`` at step 0, 1.0 at the end."""
    from lightly.utils.scheduler import cosine_schedule

    return float(cosine_schedule(step, max(total, 1), start, 1.0))


def _ema(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    with torch.no_grad():
        for s, t in zip(student.parameters(), teacher.parameters()):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


class SimCLR(PretrainMethod):
    """Contrast two views of each image against the rest of the batch (NT-Xent)."""

    name = "simclr"
    defaults = {"temperature": 0.2, "projection_dim": 128}

    def __init__(self, model: Classifier, total_steps: int, views: ViewConfig, **options: Any):
        super().__init__(model, total_steps, views, **options)
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        self.head = SimCLRProjectionHead(model.width, model.width, self.options["projection_dim"])
        self.criterion = NTXentLoss(temperature=self.options["temperature"])

    def loss(self, images, labels, generator, step):
        first = random_view(images, self.views, generator)
        second = random_view(images, self.views, generator)
        return self.criterion(self.head(self.model.features(first)), self.head(self.model.features(second)))


class BYOL(PretrainMethod):
    """An online network predicts a momentum teacher's projection of the other view."""

    name = "byol"
    defaults = {"momentum": 0.99, "projection_dim": 256, "hidden_dim": 1024}

    def __init__(self, model: Classifier, total_steps: int, views: ViewConfig, **options: Any):
        super().__init__(model, total_steps, views, **options)
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

        hidden, dim = self.options["hidden_dim"], self.options["projection_dim"]
        self.projection = BYOLProjectionHead(model.width, hidden, dim)
        self.prediction = BYOLPredictionHead(dim, hidden, dim)
        self.teacher = copy.deepcopy(model).requires_grad_(False)
        self.teacher_projection = copy.deepcopy(self.projection).requires_grad_(False)
        self.criterion = NegativeCosineSimilarity()

    def _online(self, x):
        return self.prediction(self.projection(self.model.features(x)))

    def _target(self, x):
        with torch.no_grad():
            return self.teacher_projection(self.teacher.features(x))

    def loss(self, images, labels, generator, step):
        first = random_view(images, self.views, generator)
        second = random_view(images, self.views, generator)
        return 0.5 * (self.criterion(self._online(first), self._target(second))
                      + self.criterion(self._online(second), self._target(first)))

    def after_step(self, step):
        momentum = _momentum(step, self.total_steps, self.options["momentum"])
        _ema(self.model, self.teacher, momentum)
        _ema(self.projection, self.teacher_projection, momentum)


class DINO(PretrainMethod):
    """Self-distillation: the student matches a momentum teacher's centred, sharpened output.

    Two global views for the teacher; the student also sees ``local_views``
    small crops (multi-crop) when the backbone takes any input size.
    """

    name = "dino"
    defaults = {"momentum": 0.996, "output_dim": 2048, "hidden_dim": 512, "bottleneck_dim": 64,
                "teacher_temp": 0.04, "student_temp": 0.1, "local_views": 2}

    def __init__(self, model: Classifier, total_steps: int, views: ViewConfig, **options: Any):
        super().__init__(model, total_steps, views, **options)
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead

        o = self.options
        def make_head() -> nn.Module:
            return DINOProjectionHead(model.width, o["hidden_dim"], o["bottleneck_dim"], o["output_dim"])

        self.head = make_head()
        self.teacher = copy.deepcopy(model).requires_grad_(False)
        # A weight-normed layer cannot be deep-copied: build the teacher head anew and copy the values.
        self.teacher_head = make_head()
        self.teacher_head.load_state_dict(self.head.state_dict())
        self.teacher_head.requires_grad_(False)
        self.criterion = DINOLoss(output_dim=o["output_dim"], warmup_teacher_temp=o["teacher_temp"],
                                  teacher_temp=o["teacher_temp"], student_temp=o["student_temp"])
        # Vision transformers built for one image size cannot take the small local crops.
        self.local_views = 0 if hasattr(model.backbone, "patch_embed") else int(o["local_views"])
        self.local_config = views.model_copy(update={"crop_scale": (0.05, 0.35)})

    def loss(self, images, labels, generator, step):
        size = images.shape[-1]
        global_views = [random_view(images, self.views, generator) for _ in range(2)]
        local_views = [random_view(images, self.local_config, generator, out_size=max(8, size // 2))
                       for _ in range(self.local_views)]
        with torch.no_grad():
            teacher_out = [self.teacher_head(self.teacher.features(v)) for v in global_views]
        student_out = [self.head(self.model.features(v)) for v in global_views + local_views]
        return self.criterion(teacher_out, student_out)

    def after_step(self, step):
        momentum = _momentum(step, self.total_steps, self.options["momentum"])
        _ema(self.model, self.teacher, momentum)
        _ema(self.head, self.teacher_head, momentum)


class MAE(PretrainMethod):
    """Masked autoencoding: a ViT encodes the visible patches, a light decoder fills the rest.

    Needs a timm vision transformer backbone (e.g. ``vit_tiny_patch16_224`` at
    ``img_size`` 64); the loss is the mean squared error on masked patches of
    the normalised image.
    """

    name = "mae"
    defaults = {"mask_ratio": 0.75, "decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4}

    def __init__(self, model: Classifier, total_steps: int, views: ViewConfig, **options: Any):
        super().__init__(model, total_steps, views, **options)
        if not hasattr(model.backbone, "patch_embed"):
            raise ConfigError(f"pretrain method 'mae' needs a vision transformer backbone "
                              f"(e.g. vit_tiny_patch16_224), not '{model.config['backbone']}'")
        import warnings

        from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM

        vit = model.backbone
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)
        self.patch_size = vit.patch_embed.patch_size[0]
        self.prefix = getattr(vit, "num_prefix_tokens", 1)
        with warnings.catch_warnings():  # lightly 1.6 deprecates the decoder's name, not its behaviour
            warnings.simplefilter("ignore", FutureWarning)
            self.decoder = MAEDecoderTIMM(num_patches=vit.patch_embed.num_patches, patch_size=self.patch_size,
                                          in_chans=model.config["in_chans"], embed_dim=vit.embed_dim,
                                          decoder_embed_dim=self.options["decoder_dim"],
                                          decoder_depth=self.options["decoder_depth"],
                                          decoder_num_heads=self.options["decoder_heads"],
                                          num_prefix_tokens=self.prefix)

    def loss(self, images, labels, generator, step):
        from lightly.models import utils

        x = random_view(images, self.views.model_copy(update={"crop_scale": (0.5, 1.0)}), generator)
        m = self.model  # the classifier's own input normalisation, so fine-tuning sees the same inputs
        x = normalise_input(x, m.input_norm, m.mean, m.std, m.percentiles)
        n = x.shape[0]
        sequence = self.encoder.sequence_length
        visible, masked = utils.random_token_mask(size=(n, sequence), mask_ratio=self.options["mask_ratio"],
                                                  device=x.device)
        encoded = self.encoder.encode(images=x, idx_keep=visible)
        # The decoder sees mask tokens everywhere except at the visible positions.
        tokens = utils.repeat_token(self.decoder.mask_token, (n, sequence))
        tokens = utils.set_at_index(tokens, visible, self.decoder.embed(encoded).type_as(tokens))
        decoded = utils.get_at_index(self.decoder.decode(tokens), masked)
        predicted = self.decoder.predict(decoded)
        # Prefix tokens (the class token) are never masked: patch indices are shifted by them.
        target = utils.get_at_index(utils.patchify(x, self.patch_size), masked - self.prefix)
        return F.mse_loss(predicted, target)


class PhantomSupervised(PretrainMethod):
    """Supervised pretraining on labelled procedural images (benign vs malignant phantom lesions).

    No natural images and no patient data: the network learns mass shape,
    margin and calcification cues from the formula-driven phantom.
    """

    name = "phantom-supervised"
    supervised = True
    defaults = {"label_smoothing": 0.1}

    def __init__(self, model: Classifier, total_steps: int, views: ViewConfig, **options: Any):
        super().__init__(model, total_steps, views, **options)
        self.augment = AugmentConfig()

    def loss(self, images, labels, generator, step):
        x = augment_batch(images, self.augment, generator)
        return F.cross_entropy(self.model(x), labels, label_smoothing=self.options["label_smoothing"])


METHODS: dict[str, type[PretrainMethod]] = {m.name: m for m in (SimCLR, BYOL, DINO, MAE, PhantomSupervised)}


def create_method(name: str, model: Classifier, total_steps: int, views: ViewConfig | None = None,
                  **options: Any) -> PretrainMethod:
    if name not in METHODS:
        raise ConfigError(f"unknown pretrain method '{name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](model, total_steps, views or ViewConfig(), **options)
