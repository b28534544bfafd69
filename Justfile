# enrich: developer recipes (https://just.systems). `just --list` shows them.

# Run the tests (pass -m "not slow" to skip the real-model ones).
test *args:
    python -m pytest -q {{args}}

# Lint, format check and strict typing.
lint:
    ruff check enrich tests bench
    ruff format --check enrich tests bench
    mypy

# Regenerate schemas/ from the pydantic models in enrich/config.py and enrich/contracts.py; commit the result.
schema:
    python -m enrich.schema schemas
