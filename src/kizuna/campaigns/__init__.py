"""Campaigns: the outbox, delivery to channels, suppressions and the sending rules."""
