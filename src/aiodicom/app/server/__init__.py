"""`aiodicom serve`: the run loop, config, workers, logs, metrics, audit, policy, users."""
