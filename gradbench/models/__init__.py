"""Model families. Importing this package registers every built-in model in MODELS."""

# Modules that add variants (seq2seq, video) import the families they extend themselves.
from gradbench.models import (  # noqa: F401  (registration)
    cnn,
    cnn3d,
    mlp,
    rnn,
    seq2seq,
    transformer,
    video,
)
from gradbench.models.build import build_model, model_options  # noqa: F401
