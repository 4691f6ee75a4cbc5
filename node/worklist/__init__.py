"""Orders and the worklist: immutable order events (from HL7 ORM/OMI), and the current
state of every worklist item resolved from them deterministically (pure, node.worklist.current)."""
