"""Video models: a per-frame CNN encoder followed by a temporal model over frame features.

``rnn``, ``irnn``, ``lstm``, ``gru`` and ``transformer`` on a task whose input is a
video (``InputSpec.kind == "video"``, shape (T, C, H, W)) build the same temporal model
they build on a sequence task, fed with one feature vector per frame: a small CIFAR-style
CNN from ``cnn.py`` (``encoder=plain-8`` or ``encoder=resnet-8``, ``encoder_width``
stem channels) whose linear head gives ``frame_features`` numbers per frame. The
encoder is the same for every temporal model, so at a matched budget (``--match``
sizes ``width``, the temporal model's) a comparison between them is a comparison of how
they carry information across frames.

The temporal models are the sequence models themselves (``RecurrentNet``,
``TransformerNet``) on an InputSpec of kind "sequence", shape (T, frame_features), so
dL/dh_t over frames comes through their own ``hidden_sequence`` / ``hidden_grad_norms``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from gradbench.errors import UsageError
from gradbench.models import cnn, rnn, transformer  # noqa: F401  (the names extended here)
from gradbench.registry import MODELS
from gradbench.task import InputSpec

# The smallest CIFAR-style CNN (6n+2 with n=1), narrow: a frame encoder runs T times per clip.
DEFAULT_ENCODER = "plain-8"
DEFAULT_ENCODER_WIDTH = 4
DEFAULT_FRAME_FEATURES = 32


def check_video_spec(spec: InputSpec, model: str) -> tuple[int, int, int, int]:
    """(T, C, H, W) of a video task; a UsageError for any other input."""
    if spec.kind != "video":
        raise UsageError(f"{model} needs a video task; this task's input is {spec.kind}")
    if len(spec.shape) != 4:
        raise UsageError(f"{model}: a video task must give shape (T, C, H, W), got {spec.shape}")
    if spec.shape[0] < 2:
        raise UsageError(f"{model}: a video needs at least 2 frames, got {spec.shape[0]}")
    steps, channels, height, width = spec.shape
    return steps, channels, height, width


class FrameEncoder(nn.Module):
    """A registered image CNN applied to every frame: (B, T, C, H, W) -> (B, T, features)."""

    def __init__(
        self,
        frame_shape: tuple[int, int, int],
        encoder: str,
        width: int,
        features: int,
        activation: str,
        batch_norm: bool,
    ):
        super().__init__()
        entry, implied = MODELS.resolve(encoder)
        if "cnn" not in entry.tags:
            cnns = ", ".join(f"{e.name}-N" for e in MODELS.entries() if "cnn" in e.tags)
            raise UsageError(f"encoder={encoder!r} is not an image CNN; choose one of {cnns}")
        if features < 1:
            raise UsageError(f"frame_features must be >= 1, got {features}")
        options: dict[str, Any] = {
            **implied,
            "width": width,
            "activation": activation,
            "batch_norm": batch_norm,
        }
        takes = inspect.signature(entry.factory).parameters
        # The CNN's classifier head becomes the frame-feature projection.
        frame_spec = InputSpec(kind="image", shape=frame_shape, num_outputs=features)
        self.cnn = entry.factory(frame_spec, **{k: v for k, v in options.items() if k in takes})

    def forward(self, x: Tensor) -> Tensor:
        batch, steps = x.shape[:2]
        return self.cnn(x.flatten(0, 1)).unflatten(0, (batch, steps))


class VideoNet(nn.Module):
    """Frame encoder, then a sequence model over the frame features."""

    def __init__(self, encoder: FrameEncoder, temporal: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.temporal = temporal

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.temporal(self.encoder(x), lengths)

    def hidden_sequence(
        self, x: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``(output, [h_0 .. h_{T-1}])``: the temporal model's states, one per frame."""
        return self.temporal.hidden_sequence(self.encoder(x), lengths)

    def hidden_grad_norms(
        self, x: Tensor, lengths: Tensor | None, loss_fn: Callable[[Tensor], Tensor]
    ) -> Tensor | None:
        """The temporal model's fused ||dL/dh_t|| over frames, or None where it has none."""
        fused = getattr(self.temporal, "hidden_grad_norms", None)
        if fused is None:
            return None
        return fused(self.encoder(x), lengths, loss_fn)

    def fused_probe_pays(self, device, padded: bool) -> bool:
        pays = getattr(self.temporal, "fused_probe_pays", None)
        return pays is None or pays(device, padded)


def video_net(
    spec: InputSpec,
    temporal: str,
    temporal_options: dict[str, Any],
    *,
    encoder: str,
    encoder_width: int,
    frame_features: int,
    encoder_activation: str,
    batch_norm: bool,
) -> VideoNet:
    """Encoder + the sequence model registered as ``temporal`` (its own factory)."""
    steps, channels, height, width = check_video_spec(spec, temporal)
    frames = FrameEncoder(
        (channels, height, width),
        encoder,
        encoder_width,
        frame_features,
        encoder_activation,
        batch_norm,
    )
    sequence_spec = InputSpec(
        kind="sequence",
        shape=(steps, frame_features),
        num_outputs=spec.num_outputs,
        target=spec.target,
        output_steps=spec.output_steps,
    )
    return VideoNet(frames, MODELS.entry(temporal).factory(sequence_spec, **temporal_options))


# The factories' own options (not the temporal model's); every video factory takes them.
ENCODER_OPTIONS = ("encoder", "encoder_width", "frame_features", "encoder_activation", "batch_norm")


def _video(temporal: str, factory_locals: dict[str, Any]) -> VideoNet:
    """``video_net`` from a video factory's ``locals()``: its spec, the encoder options,
    and the rest as the options of the sequence model ``temporal``."""
    options = dict(factory_locals)
    spec = options.pop("spec")
    encoder_options = {name: options.pop(name) for name in ENCODER_OPTIONS}
    return video_net(spec, temporal, options, **encoder_options)


@MODELS.register_variant("rnn", kind="video")
def rnn_video(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 1,
    activation: str = "tanh",
    bidirectional: bool = False,
    pooling: str = "last",
    layer_norm: bool = False,
    recurrent_init: str = "default",
    encoder: str = DEFAULT_ENCODER,
    encoder_width: int = DEFAULT_ENCODER_WIDTH,
    frame_features: int = DEFAULT_FRAME_FEATURES,
    encoder_activation: str = "relu",
    batch_norm: bool = True,
) -> nn.Module:
    """Frame CNN + plain RNN over frames."""
    return _video("rnn", locals())


@MODELS.register_variant("irnn", kind="video")
def irnn_video(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 1,
    bidirectional: bool = False,
    pooling: str = "last",
    layer_norm: bool = False,
    recurrent_init: str = "identity",
    encoder: str = DEFAULT_ENCODER,
    encoder_width: int = DEFAULT_ENCODER_WIDTH,
    frame_features: int = DEFAULT_FRAME_FEATURES,
    encoder_activation: str = "relu",
    batch_norm: bool = True,
) -> nn.Module:
    """Frame CNN + IRNN over frames."""
    return _video("irnn", locals())


@MODELS.register_variant("lstm", kind="video")
def lstm_video(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 1,
    bidirectional: bool = False,
    pooling: str = "last",
    layer_norm: bool = False,
    recurrent_init: str = "default",
    forget_bias: float = 1.0,
    encoder: str = DEFAULT_ENCODER,
    encoder_width: int = DEFAULT_ENCODER_WIDTH,
    frame_features: int = DEFAULT_FRAME_FEATURES,
    encoder_activation: str = "relu",
    batch_norm: bool = True,
) -> nn.Module:
    """Frame CNN + LSTM over frames."""
    return _video("lstm", locals())


@MODELS.register_variant("gru", kind="video")
def gru_video(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 1,
    bidirectional: bool = False,
    pooling: str = "last",
    layer_norm: bool = False,
    recurrent_init: str = "default",
    encoder: str = DEFAULT_ENCODER,
    encoder_width: int = DEFAULT_ENCODER_WIDTH,
    frame_features: int = DEFAULT_FRAME_FEATURES,
    encoder_activation: str = "relu",
    batch_norm: bool = True,
) -> nn.Module:
    """Frame CNN + GRU over frames."""
    return _video("gru", locals())


@MODELS.register_variant("transformer", kind="video")
def transformer_video(
    spec: InputSpec,
    *,
    width: int = 64,
    depth: int = 2,
    heads: int = 4,
    ffn_mult: int = 4,
    positions: str = "learned",
    pre_ln: bool = True,
    pooling: str = "mean",
    activation: str = "gelu",
    dropout: float = 0.0,
    encoder: str = DEFAULT_ENCODER,
    encoder_width: int = DEFAULT_ENCODER_WIDTH,
    frame_features: int = DEFAULT_FRAME_FEATURES,
    encoder_activation: str = "relu",
    batch_norm: bool = True,
) -> nn.Module:
    """Frame CNN + Transformer encoder over frames."""
    return _video("transformer", locals())
