"""`python -m knowpack`: the same as the `knowpack` command."""

from knowpack.cli import app

if __name__ == "__main__":  # not when a spawned worker process (a sweep's) imports this module again
    app(prog_name="knowpack")
