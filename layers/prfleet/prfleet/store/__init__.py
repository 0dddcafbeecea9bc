"""Store: prfleet's state in DynamoDB: PR heads, plans and runs, posting claims, deferred jobs, the PR's file list
per head, the result cache and delivery dedupe."""
