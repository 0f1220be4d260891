DROP TABLE IF EXISTS trust_quorum_sighting;
DROP TABLE IF EXISTS trust_quorum_node_status;
DROP TABLE IF EXISTS trust_quorum_member;
DROP TYPE IF EXISTS trust_quorum_member_state;
DROP TABLE IF EXISTS trust_quorum_configuration;
DROP TYPE IF EXISTS trust_quorum_state;
DROP TABLE IF EXISTS rack;
