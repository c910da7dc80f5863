"""Everything that talks to Postgres about Postgres itself: connections, SQL files, migrations."""
