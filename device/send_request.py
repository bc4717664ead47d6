"""An administrator's "send to the FHIR server now", from the web page to the sending service.

The hourly send (``heartpi fhir-sync``) holds the server's token; the web page does not, and must
not. As for the clock (:mod:`device.clock`), the page writes a request file and a path unit
(``heartpi-fhir-sync.path``) starts ``heartpi-fhir-sync.service``, which takes the request away
before it sends, whatever comes of it (the path unit would otherwise start it again and again).
The outcome is the send's own: the Device page's line about the FHIR server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .records import utcnow
from .storage import atomic_write, read_json_with_age

#: The request, in the data folder's ``fhir`` directory (``Config.send_request_dir``);
#: ``heartpi-fhir-sync.path`` watches for it.
REQUEST_FILE = "send-now.json"


def request_send(directory: Path, *, requested_by: str) -> None:
    """Ask the sending service to send now (StorageError when the folder cannot be written)."""
    atomic_write(Path(directory) / REQUEST_FILE,
                 json.dumps({"requested_by": requested_by, "requested_at": utcnow()}).encode())


def pending_send(directory: Path) -> Optional[tuple[dict, float]]:
    """The request waiting for the service and its age in seconds, or None."""
    return read_json_with_age(Path(directory) / REQUEST_FILE)


def take_send_request(directory: Path) -> Optional[dict]:
    """Remove a waiting request, and say who made it (None: there was none; an unreadable one
    is removed all the same, as the send goes ahead anyway)."""
    path = Path(directory) / REQUEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = {"requested_by": "?"}
    path.unlink(missing_ok=True)
    return data if isinstance(data, dict) else {"requested_by": "?"}
