"""`prfleet demo`: the sample pull request through the whole local stack."""
