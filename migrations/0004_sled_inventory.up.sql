ALTER TABLE sled ADD COLUMN IF NOT EXISTS artifact_generation INT8
    CONSTRAINT sled_artifact_generation_nonnegative CHECK (artifact_generation >= 0);
ALTER TABLE sled ADD COLUMN IF NOT EXISTS m2_devices JSONB;
