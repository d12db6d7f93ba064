"""Cluster fixtures: one Azurite-backed cluster for the module, one on moto S3."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.cluster import Cluster, start_cluster
from tests.services import _process
from tests.services.azurite import AzuriteServer
from tests.services.moto_s3 import MotoS3
from tests.services.postgres import PostgresServer

SESSION_SERVICES = {"postgres", "azurite", "moto_server"}


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After each module's clusters are stopped, none of their processes runs any more."""
    yield
    left = [(p.name, p.pid) for p in _process._RUNNING if p.name not in SESSION_SERVICES]
    assert not left, f"processes left running: {left}"


@pytest.fixture(scope="module")
def az_cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer,
               azurite: AzuriteServer) -> Iterator[Cluster]:
    azurite.create_container("dicom")
    azurite.create_container("trust")
    with start_cluster(tmp_path_factory.mktemp("az-cluster"), postgres=postgres,
                       database="cluster_az", storage_url="az://dicom/cluster",
                       trust_url="az://trust/cluster", env=azurite.env(),
                       list_objects=lambda: azurite.list_blobs("dicom", "cluster/")) as c:
        yield c


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer,
               moto_s3: MotoS3) -> Iterator[Cluster]:
    moto_s3.create_bucket("dicom")
    moto_s3.create_bucket("trust")
    with start_cluster(tmp_path_factory.mktemp("s3-cluster"), postgres=postgres,
                       database="cluster_s3", storage_url="s3://dicom/cluster",
                       trust_url="s3://trust/cluster", env=moto_s3.env(),
                       list_objects=lambda: moto_s3.list_keys("dicom", "cluster/")) as c:
        yield c
