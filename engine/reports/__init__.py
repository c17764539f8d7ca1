"""Reports and exports that the API, the web pages and the engine share (e.g. CSV)."""
