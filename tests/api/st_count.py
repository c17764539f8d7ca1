"""Requests sent, status codes and failing responses per check in schemathesis NDJSON reports
(tests/api/st_sweep.sh): `python tests/api/st_count.py OUT/*.ndjson`."""
import collections
import json
import sys

for f in sys.argv[1:]:
    sent, status, failing = 0, collections.Counter(), collections.defaultdict(set)
    for line in open(f):
        event = json.loads(line)
        if "ScenarioFinished" not in event:
            continue
        scenario = event["ScenarioFinished"]
        for it in scenario["recorder"].get("interactions", {}).values():
            if it.get("response") is not None:
                sent += 1
                status[it["response"]["status_code"]] += 1
        for case_id, checks in scenario["recorder"].get("checks", {}).items():
            for c in checks:
                if c.get("status") == "failure":
                    failing[c["name"]].add((scenario["id"], case_id))
    print(f"{f}: {sent} requests, status codes {dict(sorted(status.items()))}, "
          f"failing responses per check {({k: len(v) for k, v in failing.items()})}")
