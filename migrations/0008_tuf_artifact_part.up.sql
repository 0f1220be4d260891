-- The parts of composite artifacts (a host or trampoline image's phase-1
-- and phase-2 images, an RoT's A and B images, the control plane's zones),
-- read out of them on upload. A part is an artifact of its own (a
-- tuf_artifact row, linked to the repo in tuf_repo_artifact like any other
-- and so replicated to sleds); this table says which composite it came
-- from and where in the composite's tarball it was.
CREATE TABLE tuf_artifact_part (
    composite_id UUID NOT NULL REFERENCES tuf_artifact (id),
    part_id UUID NOT NULL REFERENCES tuf_artifact (id),
    path TEXT NOT NULL,
    PRIMARY KEY (composite_id, part_id),
    CONSTRAINT tuf_artifact_part_path_nonempty CHECK (path <> ''),
    CONSTRAINT tuf_artifact_part_not_itself CHECK (composite_id <> part_id)
);

CREATE INDEX tuf_artifact_part_by_part ON tuf_artifact_part (part_id);
