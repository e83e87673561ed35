"""User administration by admins and moderators."""
