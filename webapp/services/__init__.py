"""Use cases: the only code that changes governed state (views, API, jobs and CLI call these)."""
