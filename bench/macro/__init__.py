"""Macro benchmarks: aiodicom's server against DCMTK storescp and a pynetdicom SCP.

Each measure starts the servers as subprocesses (pinned to core 0), drives them with DCMTK
clients or a raw asyncio load generator (pinned to core 1) and reports wall time, rates, peak
RSS and server CPU time. `bench/run.py` is the entry point; see bench/README.md.
"""
