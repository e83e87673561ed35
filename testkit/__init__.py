"""Machinery shared by tests/ and loadtests/: throwaway PostgreSQL and Redis, the service as a process, free ports."""
