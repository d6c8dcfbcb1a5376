"""Serve: the serving index, request parameters, answers, HTTP, API keys."""
