"""Composable PTransforms and the column functions they run."""
from transforms.compat import coders  # noqa: F401  registers the Arrow coder for typed PCollections
