"""Composable PTransforms and the column functions they run."""
from transforms.compat import startup

startup.import_beam()   # first: Beam's import without the clients a run does not use
from transforms.compat import coders  # noqa: E402,F401  registers the Arrow coder for typed PCollections
