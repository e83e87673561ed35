"""Primitives with no feature in them: password hashing, tokens, the login throttle."""
