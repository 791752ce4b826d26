import pytest

from cluster import TestCluster


@pytest.fixture(scope="session")
def cluster():
    c = TestCluster(nodes=3)
    yield c
    c.close()
