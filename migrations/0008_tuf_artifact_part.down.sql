DROP TABLE IF EXISTS tuf_artifact_part;
