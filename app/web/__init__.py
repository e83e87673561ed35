"""The HTTP edge: the outer chain, problem details, limits, headers, client address."""
