"""`make soak`: the whole local stack under load and faults, then every invariant checked (non-zero exit if any fails).

`run.py` drives it (several real git repositories behind one fake GitHub URL, PRs with second pushes mid-flight,
redeliveries, comment commands and Re-runs, faults at chosen rates in AWS, GitHub and the model, a budget that
runs out during the day); `invariants.py` checks the outcome from the stores themselves (DynamoDB, SQS, the fake
GitHub's records, the offline model's bill, the alarm evaluator), never from what the driver believes it did.
"""
