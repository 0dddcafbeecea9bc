"""Cost: what a model call costs (prices, billing), the hard daily ledger, the spend-limit circuit and the hourly
reconciliation against the bill."""
