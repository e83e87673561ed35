"""A person's account: registration, login, sessions and refresh, the profile and the password."""
