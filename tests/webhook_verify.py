"""Checks webhook deliveries with the official Standard Webhooks library.

Reads one JSON object per line on stdin, {"secret", "headers", "body"}, and
prints one line per object: "ok <type>" when `Webhook(secret).verify`
accepts it (and returns the parsed body), else "fail <reason>". Run by
tests/api/webhooks.rs in the venv deploy/webhook-venv.sh makes.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook

for line in sys.stdin:
    case = json.loads(line)
    try:
        payload = Webhook(case["secret"]).verify(case["body"], case["headers"])
        print("ok", payload["type"], flush=True)
    except Exception as e:  # the library's WebhookVerificationError, or a bad secret
        print("fail", type(e).__name__, str(e).replace("\n", " "), flush=True)
