"""The cluster suite (`make test-cluster`): HAProxy, 3 `aiodicom serve` nodes, PostgreSQL, object
storage (Azurite, moto S3), all real processes started by the tests themselves."""
