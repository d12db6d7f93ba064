"""`make serve`: the secure server on a working default, for a first try.

Creates a development CA and certificates under ./dev-pki (once), then serves mutual TLS on
127.0.0.1:2762 and plain DICOM on 127.0.0.1:11112, storing into ./storage, with Prometheus
metrics on 127.0.0.1:9762 and the audit trail in ./audit.log.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aiodicom.app.pki import ensure_dev_pki
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.run import serve_main


def main() -> int:
    pki_dir = Path(os.environ.get("AIODICOM_DEV_PKI", "dev-pki")).resolve()
    storage = Path(os.environ.get("AIODICOM_STORAGE", "storage")).resolve()
    tls_port = int(os.environ.get("AIODICOM_TLS_PORT", "2762"))
    port = int(os.environ.get("AIODICOM_PORT", "11112"))
    metrics = os.environ.get("AIODICOM_METRICS", "127.0.0.1:9762")
    audit = Path(os.environ.get("AIODICOM_AUDIT_LOG", "audit.log")).resolve()
    dev = ensure_dev_pki(pki_dir)
    options = ServeOptions(
        host="127.0.0.1", port=port, tls_port=tls_port, cert=dev.server_cert,
        key=dev.server_key, ca=dev.ca_cert, crl=dev.crl, storage=storage,
        metrics=metrics, audit_log=audit,
    ).check()
    print(f"""aiodicom development server: AE title AIODICOM, storing into {storage}
  mutual TLS on 127.0.0.1:{tls_port}, plain DICOM on 127.0.0.1:{port}
  development CA and certificates in {pki_dir} (client AE titles: STORESCU, ECHOSCU, AIODICOM)
  metrics: curl http://{metrics}/metrics    audit trail (PS3.15 A.5 XML): {audit}

Send a file over TLS with aiodicom:
  .venv/bin/aiodicom store 127.0.0.1 {tls_port} FILE.dcm --calling-ae STORESCU --tls \\
      --cert {dev.client_cert} --key {dev.client_key} --ca {dev.ca_cert}
with DCMTK:
  TCP_NODELAY=1 /usr/bin/storescu +tls {dev.client_key} {dev.client_cert} +cf {dev.ca_cert} \\
      -aet STORESCU -aec AIODICOM 127.0.0.1 {tls_port} FILE.dcm
plain, no TLS:
  .venv/bin/aiodicom store 127.0.0.1 {port} FILE.dcm
Stop with Ctrl-C.
""", flush=True)
    return serve_main(options)


if __name__ == "__main__":
    sys.exit(main())
