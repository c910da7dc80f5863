-- Run once by the postgres image on a new data directory, in POSTGRES_DB (pgobs): pg_cron's jobs
-- live in the database named by cron.database_name (compose.yaml sets it to pgobs).
CREATE EXTENSION IF NOT EXISTS pg_cron;
