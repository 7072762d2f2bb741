"""Failure alerts: one JSON POST to ALERT_WEBHOOK_URL, sent from each orchestrator's native hook.

The payload is the same from every orchestrator so a receiver (Slack relay, PagerDuty bridge,
the tests' local receiver) needs one parser::

    {"source": "quartet", "orchestrator": "dagster", "pipeline": "full_pipeline",
     "run_id": "...", "status": "failed", "error": "...", "url": "http://127.0.0.1:3000/runs/..."}

Sending never raises: an alert that cannot be delivered is reported on stderr, and the run's own
failure stays the error the user sees.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

from core import settings

#: secrets never leave in an alert, whatever an orchestrator puts in the error text
_REDACT_ENV = (settings.SOURCE_API_TOKEN_ENV,)


def _redact(text: str) -> str:
    for name in _REDACT_ENV:
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text.replace(settings.DEV_API_TOKEN, "***")


def alert_payload(
    orchestrator: str, pipeline: str, run_id: str, error: str, url: str | None = None
) -> dict:
    return {
        "source": "quartet",
        "orchestrator": orchestrator,
        "pipeline": pipeline,
        "run_id": run_id,
        "status": "failed",
        "error": _redact(error)[:4000],
        "url": url,
    }


def send_alert(payload: dict, webhook_url: str | None = None, timeout: float = 10.0) -> bool:
    """POST ``payload`` to the webhook (default: $ALERT_WEBHOOK_URL); False when not sent."""
    webhook_url = webhook_url or os.environ.get(settings.ALERT_WEBHOOK_ENV)
    if not webhook_url:
        return False
    request = urllib.request.Request(
        webhook_url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except OSError as exc:
        print(
            f"quartet: could not deliver the failure alert to {webhook_url}: {exc}", file=sys.stderr
        )
        return False
