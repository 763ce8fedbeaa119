"""`python -m knowpack`: the same as the `knowpack` command."""

from knowpack.cli import app

app(prog_name="knowpack")
