"""The revops console: ``leadscore web`` (FastAPI, server-rendered pages, a JSON API beside them)."""
