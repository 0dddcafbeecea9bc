"""Store: prfleet's state in DynamoDB. heads (the PR's current head, one record per head: plan and fan-in),
job_runs (one run per job: claim, heartbeat, outcome, stuck), posting (who posts a head's review, the PR's posting
lease and posted fingerprints), deferrals (jobs the budget refused), headfiles (the PR's file list per head),
result_cache and deliveries (webhook dedupe); dynamo holds the table plumbing they share."""
