-- The customer store and ledger live in their own database, beside Airflow's metadata DB.
CREATE USER care WITH PASSWORD 'care';
CREATE DATABASE care OWNER care;
