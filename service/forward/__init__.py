"""Forwarding recipient status changes to the user's own app (README, Forwarding)."""
