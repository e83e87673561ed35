"""Locust scenarios: the user classes, their request names and their configuration.

``names``, ``config`` and ``addresses`` import nothing from Locust (which monkey-patches the
standard library with gevent on import), so the runner and the unit tests can use them safely.
"""
