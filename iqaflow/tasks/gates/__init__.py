"""Gate decisions, Great Expectations suites, learning rules from labels, routing actions."""
