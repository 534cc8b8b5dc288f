"""The PostgreSQL warehouse: SQL migrations, the cases table, analyst views, stream metrics."""
