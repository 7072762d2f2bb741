-- Prefect's migrations create trigram indexes: the extension must exist first.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
