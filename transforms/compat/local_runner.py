"""Beam 2.77's local streaming runner (BundleBasedDirectRunner), adapted: `register` gives a
transform an evaluator of ours (transforms/watch.py's file watch), and Pub/Sub is pulled in
larger and shorter requests.

The runner's Pub/Sub reader (transform_evaluator._PubSubReadEvaluator) asks for 10 messages per
pull, which caps a local streaming ingest at a few hundred events/s, and waits up to 30 s for a
message on the runner's one thread, so once messages stop, early panes due meanwhile are written
up to 30 s late. Its pull goes through a cached client; this evaluator hands it one that asks
for up to 1000 messages and waits at most a second. Dataflow's reader has neither limit.
"""
from apache_beam.runners.direct import transform_evaluator
from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub
from apache_beam.runners.direct.util import TransformResult
from google.api_core.exceptions import DeadlineExceeded
from google.pubsub_v1.types import PullResponse

__all__ = ['Evaluator', 'TransformResult', 'register']

PULL_MESSAGES = 1000
PULL_WAIT_S = 1.0


class _LargerPulls:
  def __init__(self, client):
    self._client = client

  def pull(self, subscription, max_messages, timeout):
    try:
      return self._client.pull(subscription=subscription, timeout=min(timeout, PULL_WAIT_S),
                               max_messages=max(max_messages, PULL_MESSAGES))
    except DeadlineExceeded:   # nothing arrived within the wait
      return PullResponse()

  def __getattr__(self, name):
    return getattr(self._client, name)


class _PubSubReadEvaluator(transform_evaluator._PubSubReadEvaluator):
  @classmethod
  def _get_subscriber_client(cls, transform):
    return _LargerPulls(super()._get_subscriber_client(transform))


class Evaluator(transform_evaluator._TransformEvaluator):
  """The runner's evaluator base (private in Beam), with what a subclass reads named here."""

  @property
  def transform(self):
    return self._applied_ptransform.transform

  @property
  def context(self):
    """The runner's EvaluationContext: create_bundle(pcollection) makes an output bundle."""
    return self._evaluation_context

  @property
  def main_output(self):
    return next(iter(self._outputs))


def register(transform: type, evaluator: type) -> None:
  """The runner's registry has no public hook; this class-level table is merged into each one."""
  transform_evaluator.TransformEvaluatorRegistry._test_evaluators_overrides[transform] = evaluator


register(_DirectReadFromPubSub, _PubSubReadEvaluator)
