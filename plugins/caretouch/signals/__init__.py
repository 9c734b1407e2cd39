"""What the store and the ledger say about customers, read only: the churn-risk signals."""
