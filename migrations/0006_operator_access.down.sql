DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS operator_token;
DROP TYPE IF EXISTS operator_role;
