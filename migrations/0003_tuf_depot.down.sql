DROP TABLE IF EXISTS nexus_artifact_copy;
DROP TABLE IF EXISTS tuf_generation;
DROP TABLE IF EXISTS tuf_repo_artifact;
DROP TABLE IF EXISTS tuf_artifact;
DROP TABLE IF EXISTS tuf_repo;
DROP TYPE IF EXISTS tuf_repo_state;
DROP TABLE IF EXISTS tuf_trust_root_lineage;
DROP TABLE IF EXISTS tuf_trust_root;
