"""Kizuna (絆): an open-source CRM for Japanese mail-order and D2C shops."""

__version__ = "0.1.0"
