"""aiodicom.core: the sans-I/O DICOM networking core (no asyncio, ssl, socket or time)."""
