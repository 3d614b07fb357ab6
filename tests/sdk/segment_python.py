#!/usr/bin/env python3
"""Sends the six calls of fixture.json through segment-analytics-python.

Usage: segment_python.py HOST WRITEKEY RUNID

HOST is a base URL such as http://127.0.0.1:8080 (the library appends /v1/batch).
Prints one line `SPOOR_SDK_SENT <json>` with the resolved calls it sent, and exits non-zero
if the library reports any delivery error. Exit 3 means the library is not installed.
"""

import json
import os
import sys
import threading
from datetime import datetime

PREFIX = "py"
LIBRARY = "segment-analytics-python"


def main():
    if len(sys.argv) != 4:
        print("usage: segment_python.py HOST WRITEKEY RUNID", file=sys.stderr)
        return 64
    host, write_key, run_id = sys.argv[1:]

    try:
        from segment.analytics import Client, VERSION
    except ImportError as e:
        print(f"segment-analytics-python is not installed: {e}", file=sys.stderr)
        return 3

    calls = load_calls(f"{PREFIX}-{run_id}")

    errors = []
    lock = threading.Lock()

    def on_error(err, batch):
        with lock:
            errors.append(f"{err!r} ({len(batch)} events)")

    client = Client(
        write_key,
        host=host,
        on_error=on_error,
        max_retries=2,
        timeout=10,
        max_total_backoff_duration=20,
        max_rate_limit_duration=20,
        # Exercise the library's gzip path too; Segment accepts it, so must Spoor.
        gzip=os.environ.get("SPOOR_SDK_PY_GZIP", "1") == "1",
        upload_size=100,
    )

    for c in calls:
        t = c["type"]
        common = {"user_id": c.get("userId"), "anonymous_id": c.get("anonymousId")}
        if t == "identify":
            client.identify(traits=c["traits"], **common)
        elif t == "track":
            ts = c.get("timestamp")
            client.track(
                event=c["event"],
                properties=c["properties"],
                timestamp=datetime.fromisoformat(ts) if ts else None,
                **common,
            )
        elif t == "page":
            client.page(name=c["name"], properties=c["properties"], **common)
        elif t == "screen":
            client.screen(name=c["name"], properties=c["properties"], **common)
        elif t == "group":
            client.group(group_id=c["groupId"], traits=c["traits"], **common)
        elif t == "alias":
            client.alias(previous_id=c["previousId"], user_id=c["userId"])
        else:
            raise SystemExit(f"fixture has unknown call type {t!r}")

    # flush() blocks until the consumer thread has handled every queued message (delivered
    # or given up, in which case on_error ran); shutdown() also stops the thread.
    done = threading.Event()

    def shutdown():
        client.shutdown()
        done.set()

    threading.Thread(target=shutdown, daemon=True).start()
    if not done.wait(90):
        print("segment-analytics-python: flush did not finish within 90 s", file=sys.stderr)
        return 2

    print(
        "SPOOR_SDK_SENT "
        + json.dumps(
            {"library": LIBRARY, "version": VERSION, "prefix": PREFIX, "run_id": run_id, "calls": calls},
            ensure_ascii=False,
        ),
        flush=True,
    )
    if errors:
        for e in errors:
            print(f"segment-analytics-python delivery error: {e}", file=sys.stderr)
        return 1
    return 0


def load_calls(ident):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "fixture.json"), encoding="utf-8") as f:
        fixture = json.load(f)

    def resolve(v):
        if isinstance(v, str):
            return v.replace("{id}", ident)
        if isinstance(v, list):
            return [resolve(x) for x in v]
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        return v

    return resolve(fixture["calls"])


if __name__ == "__main__":
    sys.exit(main())
