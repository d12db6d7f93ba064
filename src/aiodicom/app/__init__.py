"""The bundled server and command line, built on the library (`aiodicom.aio`).

Rooms: `cli` (argument parsing and the client commands), `server` (what `aiodicom serve`
runs: config, workers, logs, metrics, audit, policy, users), `archive` (storage, the head
reader, the index, Q/R over the index) and `pki` (the certificate authority). See
docs/design/layers.md for what may import what.
"""
