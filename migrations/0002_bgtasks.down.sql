DROP TABLE IF EXISTS bgtask_heartbeat;
DROP TABLE IF EXISTS bgtask_setting;
