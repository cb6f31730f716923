"""The web console: server-rendered pages (Jinja2) over the same API, with a little plain JS
(EventSource for a run's live stream, fetch for buttons and the runs list's refresh)."""
