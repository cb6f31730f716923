"""Services the project can start by itself: a private Redis, a worker subprocess."""
