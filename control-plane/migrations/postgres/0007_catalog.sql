-- The catalog's definitions made through the management API, moved from
-- sled. The same text for both engines. Times are unix milliseconds (UTC).
-- See control-plane/src/storage/catalog.rs.

-- One row per API-defined notification type (`kind` 'type') or rule
-- (`kind` 'rule'): a type and a rule may share a name, so the kind is part
-- of the key. `definition` is the TypeDefinition or the Rule as JSON,
-- read and written whole: the catalog is loaded once at start and every
-- change replaces one definition. `updated_at` is when it was last put,
-- for operators reading the table. The config file's definitions are
-- never stored here.
CREATE TABLE catalog_definitions (
    kind       TEXT NOT NULL CHECK (kind IN ('type', 'rule')),
    name       TEXT NOT NULL,
    definition TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
