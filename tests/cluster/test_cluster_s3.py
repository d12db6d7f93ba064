"""The same cluster on S3 (moto's server) instead of Azure Blob: 200 instances through HAProxy,
each in the bucket and the shared index exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.cluster import Cluster
from tests.cluster.harness import sop_uid, write_instances
from tests.cluster.test_cluster import SIZE, assert_exactly_once, send_parallel

pytestmark = pytest.mark.cluster


def test_s3_cluster_stores_200_instances_exactly_once(
        s3_cluster: Cluster, tmp_path: Path) -> None:
    files = write_instances(tmp_path / "files", studies=4, per_study=50, size=SIZE, tag="s")
    runs = send_parallel(s3_cluster, files, 4, "s")
    for run in runs:
        assert run.returncode == 0, run.output[-2000:]
    assert sorted(p for run in runs for p in run.acknowledged) == sorted(files)
    assert_exactly_once(s3_cluster, {sop_uid(p) for p in files})
