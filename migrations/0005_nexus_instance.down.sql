DROP TABLE IF EXISTS nexus_instance;
