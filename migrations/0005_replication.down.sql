ALTER TABLE sled DROP COLUMN IF EXISTS artifacts_complete;
DROP TABLE IF EXISTS nexus_instance;
