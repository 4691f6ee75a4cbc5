"""Replication: which nodes must hold a study, who is missing it, and how bytes get there."""
