"""The command line: Typer commands, the error boundary and rendering. The only Rich user."""
