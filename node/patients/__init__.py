"""Patient identity as immutable events (IHE PIR): what the HIS said, kept as it said it,
and the current identity computed from all of it the same way on every node."""
