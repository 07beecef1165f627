"""Contracts of eventferry: pydantic models and the Arrow schemas derived from them."""
