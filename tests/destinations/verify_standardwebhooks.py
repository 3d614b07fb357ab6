"""Verifies webhook requests Spoor sent with the `standardwebhooks` package (an independent
implementation of the Standard Webhooks signature). Used by
crates/spoor-server/tests/api/destinations.rs.

stdin: {"secret": "whsec_...", "requests": [{"headers": {...}, "body": "..."}, ...]}
stdout: the number of verified requests; exit status 1 (with the error) on the first that
does not verify, and once more for a tampered copy that does (it must not).
"""
import json
import sys

from standardwebhooks import Webhook

req = json.load(sys.stdin)
wh = Webhook(req["secret"])
n = 0
for r in req["requests"]:
    wh.verify(r["body"].encode(), r["headers"])
    n += 1
    try:
        wh.verify((r["body"] + " ").encode(), r["headers"])
    except Exception:
        pass
    else:
        print("a tampered body verified", file=sys.stderr)
        sys.exit(1)
print(n)
