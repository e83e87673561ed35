"""The service's edge: who the client is (behind trusted proxies), how often it may call
the unauthenticated auth endpoints, and the security headers and CORS of every response."""
