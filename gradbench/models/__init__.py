"""Model families. Importing this package registers every built-in model in MODELS."""

from gradbench.models import cnn, mlp, rnn, transformer  # noqa: F401  (registration)
from gradbench.models.build import build_model, model_options  # noqa: F401
