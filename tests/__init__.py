"""The test suite; importable as `tests` so tests and bench share tests.support."""
