"""Helpers shared by the tests: composed configs and synthetic run records."""
