-- Which gateway processes hold a live actor for a grant. A revocation is
-- acknowledged once every holder has stopped its actor and removed its row.
CREATE TABLE grant_holders (
    grant_id TEXT NOT NULL,
    replica  TEXT NOT NULL,
    since    TEXT NOT NULL,
    PRIMARY KEY (grant_id, replica)
);
