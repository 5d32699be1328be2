"""Print audits: registering scans to their masters, defects of a printed page."""
