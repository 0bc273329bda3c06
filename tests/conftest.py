import os
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))  # for spec_reader, forge, nats_server, kafka_broker

import kafka_broker
import nats_server

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    """The URL of a throwaway nats-server for this test module (skipped without the
    binary, a failure in CI)."""
    nats_server.require_server_binary()
    with nats_server.local_server() as url:
        yield url


@pytest.fixture(scope="module")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a throwaway tansu broker for this test module (skipped
    without the broker or confluent-kafka, a failure in CI)."""
    kafka_broker.require_broker()
    with kafka_broker.local_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def torch() -> ModuleType:
    """The torch module (`make torch` installs the pinned one; skipped without it, a
    failure in CI)."""
    try:
        import torch
    except ImportError as e:
        if os.environ.get("CI"):
            pytest.fail(f"torch is not installed (`make torch`): {e}")
        pytest.skip(f"torch is not installed (`make torch`): {e}")
    return torch
