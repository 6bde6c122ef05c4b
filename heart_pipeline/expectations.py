"""Custom Great Expectations expectations of the data contract (checks of meaning)."""
