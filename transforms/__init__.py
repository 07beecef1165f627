"""Composable PTransforms and the column functions they run."""
