"""Beam's option parsing and logging, where the project relies on more than their public API.

Each name here is checked against the pinned Beam by tests/test_compat.py.
"""
import argparse

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ['STEP_LOGGER', 'declared', 'filesystem_options']

# The logger Beam reports a failing step's exception with (traceback included) before it
# re-raises it: pipelines/options.py filters the kinds it tells in one line.
STEP_LOGGER = 'apache_beam.runners.common'


def declared(parser: argparse.ArgumentParser, flag: str) -> bool:
  """Whether `flag` is already declared. Beam parses every PipelineOptions class with one parser,
  which refuses a flag declared twice, and argparse has no public way to ask."""
  return flag in parser._option_string_actions


def filesystem_options() -> PipelineOptions | None:
  """The options Beam's FileSystems were configured with (FileSystems.set_options at launch; the
  worker harness does the same on workers); None before that. Beam keeps them private."""
  return FileSystems._pipeline_options
