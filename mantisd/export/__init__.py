"""Exports of the run log for other engines (`mantis runs export`)."""
