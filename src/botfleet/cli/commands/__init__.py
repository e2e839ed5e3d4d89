"""One typer sub-app per resource."""
