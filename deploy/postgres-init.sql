-- The customer store and ledger live in their own database, beside Airflow's metadata DB.
-- Two roles (docs/deploy.md, "PostgreSQL roles"): care_owner owns the schema and runs
-- `care store init --app-role care`; the application (workers, API server) connects as care,
-- which may only SELECT and INSERT on the ledger, so it cannot disable its protection.
CREATE USER care_owner WITH PASSWORD 'care_owner';
CREATE USER care WITH PASSWORD 'care';
CREATE DATABASE care OWNER care_owner;
