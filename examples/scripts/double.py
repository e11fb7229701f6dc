"""An actor in Python for the `exec` component: one JSON value in per line, its double out."""
import json
import sys

for line in sys.stdin:
    print(json.dumps(2 * json.loads(line)))
