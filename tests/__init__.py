"""Behaviour tests: real adapters and clients against loopback fakes."""
