"""pipeline.lease on S3 (moto's server on loopback): the tests of tests/pipeline/test_lease.py, their run directory in a bucket.

pytest collects the imported tests here too, with this module's `run_dir` fixture and marker.
"""

from __future__ import annotations

import pytest

from tests.pipeline.test_lease import (  # noqa: F401 (collected here, on S3)
    test_a_lease_from_another_host_is_stale_only_without_heartbeat,
    test_a_second_driver_is_refused_with_the_holders_name,
    test_the_heartbeat_advances_and_a_lost_lease_is_noticed,
    test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once,
)

pytestmark = pytest.mark.integration  # starts the session's S3 server


@pytest.fixture
def run_dir(s3_bucket) -> str:
    """A run directory in a new, empty bucket."""
    return f"s3://{s3_bucket}/run"
