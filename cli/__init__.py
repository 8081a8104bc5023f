"""The `distributeai` command (typer): nothing imports it."""
