"""Print batch results (JSONL) as a short table: `python examples/show.py out.jsonl ...`."""

import json
import sys

for path in sys.argv[1:]:
    print(f"\n{path}")
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("error"):
                print(f"  {r['id']:<14} ERROR {r['error']}")
                continue
            verdict = r.get("score", r.get("winner"))
            probs = " ".join(f"{k}:{v:.2f}" for k, v in r["probabilities"].items())
            feedback = " ".join(r["feedback"].split())
            print(f"  {r['id']:<14} [RESULT] {verdict}  p({probs})  {feedback[:90]}")
