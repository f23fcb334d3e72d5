"""Monitoring consumers: the live dashboard, the status snapshot and the run report."""
