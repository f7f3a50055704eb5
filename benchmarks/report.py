"""How a benchmark prints its result: a one-line summary, or with --json one JSON object on stdout
(and the summary on stderr). Pure Python: the input-pipeline benchmark imports JAX only after pinning
its cores."""

import json
import sys


def report(result: dict, summary: str, *, as_json: bool) -> None:
  if as_json:
    print(summary, file=sys.stderr)
    print(json.dumps(result))
  else:
    print(summary)
