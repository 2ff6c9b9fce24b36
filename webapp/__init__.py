"""The Flask console (app factory arrives with the web issue) and its presentation helpers."""
