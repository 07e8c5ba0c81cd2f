"""Keep secrets out of the logs.

Bearer tokens travel in a header, which uvicorn never logs; but a user may still put
one in a URL (``?token=...``), and the access log prints URLs. `RedactSecrets` masks
the values of secret-looking query parameters in every log record it sees.

    logging.getLogger("uvicorn.access").addFilter(RedactSecrets())
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|key|password|secret|auth)=)[^&\s\"]*"
)


def redact(text: str) -> str:
    """`text` with the values of secret-looking query parameters replaced by ``***``."""
    return SECRET_PARAMS.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """A logging filter that masks secret query parameters in the message and its args."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True
