"""Real services for tests (PostgreSQL, Azurite, moto S3, HAProxy), started and stopped here."""
