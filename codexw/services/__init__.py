"""Services: one module per command's work. They return results and raise typed
errors from codexw.core.errors; they never print."""
