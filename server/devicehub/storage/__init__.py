"""The database: connections, models, migrations and every SQL statement."""
