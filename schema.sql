-- nix-quorum: the whole database schema, as a new ledger is created (src/db.ts). An existing ledger
-- is brought to it by the numbered migrations in src/db/migrations.ts, never by inference: a change
-- here comes with a migration, and test/db.test.ts checks that a migrated ledger equals a new one.

CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- The log's leaves other than attestations: the registry and policy statements of the log operator
-- (src/ledger/leaf.ts), as their exact leaf text. builders and policies are their projection.
CREATE TABLE IF NOT EXISTS operator_leaves (
  leaf_index INTEGER PRIMARY KEY,
  leaf       TEXT NOT NULL
);

-- Builder keys, as the registry leaves state them (rebuilt from them at start). Names are unique
-- forever and a key has one name ever, so old log entries keep meaning what they meant. A row with no
-- added_leaf is one the log does not state (written into the database by hand): it never counts, but
-- stays, because attestations reference it.
CREATE TABLE IF NOT EXISTS builders (
  id           INTEGER PRIMARY KEY,
  name         TEXT NOT NULL UNIQUE,
  public_key   BLOB NOT NULL,            -- 32 raw Ed25519 bytes
  added_at     INTEGER NOT NULL,         -- unix ms
  revoked_at   INTEGER,                  -- unix ms; NULL while active
  added_leaf   INTEGER,                  -- the registry leaf that added it
  revoked_leaf INTEGER                   -- the registry leaf that revoked it
);
CREATE UNIQUE INDEX IF NOT EXISTS builders_key ON builders (public_key) WHERE added_leaf IS NOT NULL;

-- One row per log leaf: every accepted attestation, including the second, conflicting statement of an
-- equivocating key (kept as evidence). leaf_index is the RFC 9162 leaf index; the leaf bytes are
-- re-encoded from these columns (src/ledger/leaf.ts), so nothing is stored twice.
CREATE TABLE IF NOT EXISTS attestations (
  leaf_index        INTEGER PRIMARY KEY,
  builder_id        INTEGER NOT NULL REFERENCES builders(id),
  drv_path          TEXT NOT NULL,
  output_name       TEXT NOT NULL,
  out_path          TEXT NOT NULL,
  nar_hash          TEXT NOT NULL,     -- sha256:<nix32>
  nar_size          INTEGER NOT NULL,
  refs              TEXT NOT NULL,     -- full store paths, sorted, joined by ','
  signature         BLOB NOT NULL,     -- 64 bytes over the statement
  narinfo_signature TEXT,              -- builder's Nix Sig over the fingerprint, or NULL
  created_at        INTEGER NOT NULL   -- unix ms
);
-- Lookups by store path (and by hash part, as a range on the path); also how ingest finds a key's
-- earlier statements for a path (duplicates and conflicts). Kept narrow: it is the biggest index.
CREATE INDEX IF NOT EXISTS attestations_path ON attestations (out_path, builder_id);
CREATE INDEX IF NOT EXISTS attestations_drv ON attestations (drv_path);
CREATE INDEX IF NOT EXISTS attestations_builder ON attestations (builder_id, leaf_index);

-- A key that signed two different contents for one output path: both leaves are evidence.
CREATE TABLE IF NOT EXISTS conflicts (
  builder_id   INTEGER NOT NULL REFERENCES builders(id),
  out_path     TEXT NOT NULL,
  first_leaf   INTEGER NOT NULL REFERENCES attestations(leaf_index),
  second_leaf  INTEGER NOT NULL REFERENCES attestations(leaf_index),
  detected_at  INTEGER NOT NULL,
  PRIMARY KEY (builder_id, out_path, second_leaf)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conflicts_recent ON conflicts (detected_at);

-- Hashes of every complete, aligned subtree of the log: (level, idx) covers leaves
-- [idx * 2^level, (idx + 1) * 2^level). Proofs read O(log n) rows.
CREATE TABLE IF NOT EXISTS merkle_nodes (
  level INTEGER NOT NULL,
  idx   INTEGER NOT NULL,
  hash  BLOB NOT NULL,
  PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Signed tree heads (C2SP checkpoints), one per published tree size.
CREATE TABLE IF NOT EXISTS checkpoints (
  tree_size  INTEGER PRIMARY KEY,
  root_hash  BLOB NOT NULL,
  note       TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

-- Witness cosignatures of our checkpoints (c2sp.org/tlog-cosignature), one per tree size and witness
-- (its vkey text), each already verified over that checkpoint's text. The served checkpoint is the
-- note of its size followed by these lines (src/witness/cosignatures.ts).
CREATE TABLE IF NOT EXISTS cosignatures (
  tree_size  INTEGER NOT NULL REFERENCES checkpoints(tree_size),
  witness    TEXT NOT NULL,
  line       TEXT NOT NULL,            -- "— <name> base64(key id || timestamp || signature)\n"
  timestamp  INTEGER NOT NULL,         -- the witness's POSIX seconds
  created_at INTEGER NOT NULL,         -- unix ms, when we stored it
  PRIMARY KEY (tree_size, witness)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cosignatures_witness ON cosignatures (witness, tree_size);

-- Quorum policies, as the policy leaves state them (the latest leaf of a name; rebuilt from them at
-- start); the member set is a separate table so revocation and membership are plain joins.
CREATE TABLE IF NOT EXISTS policies (
  name        TEXT PRIMARY KEY,
  threshold   INTEGER NOT NULL CHECK (threshold >= 1),
  on_conflict TEXT NOT NULL CHECK (on_conflict IN ('block', 'ignore')),
  all_builders INTEGER NOT NULL DEFAULT 0, -- 1: the set is "every active builder" (the default policy)
  updated_at  INTEGER NOT NULL,
  leaf_index  INTEGER                   -- the policy leaf that stated it
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS policy_builders (
  policy       TEXT NOT NULL REFERENCES policies(name) ON DELETE CASCADE,
  builder_name TEXT NOT NULL,
  PRIMARY KEY (policy, builder_name)
) WITHOUT ROWID;

-- Materialised quorum decision per (policy, output path), updated in the same transaction as the
-- attestations, revocations or policy changes that move it. Only 'quorum' and 'blocked' are stored:
-- a path attested but without a row is pending. A path is advertised when its status is
-- 'quorum' and its NAR is retrievable (nars row): the narinfo lookup is one indexed join.
-- A rowid table, not WITHOUT ROWID: rows carry references and signatures (often over 1 KB), which in
-- a WITHOUT ROWID b-tree spill onto overflow pages that every key comparison of a lookup then reads;
-- here the lookup compares only the narrow (policy, out_path) index and reads one row by rowid.
CREATE TABLE IF NOT EXISTS decisions (
  policy     TEXT NOT NULL,
  out_path   TEXT NOT NULL,
  status     TEXT NOT NULL CHECK (status IN ('quorum', 'pending', 'blocked')), -- 'pending' only in databases from before 2026-11
  nar_hash   TEXT,                     -- the agreed content when status = 'quorum'
  nar_size   INTEGER,
  refs       TEXT,
  deriver    TEXT,                     -- a drvPath of the agreeing attestations
  sigs       TEXT,                     -- the agreeing builders' narinfo Sigs, '\n'-joined
  cache_sig  TEXT,                     -- the substituter's own Sig over the agreed content's fingerprint
  agreeing   INTEGER NOT NULL,         -- distinct policy keys behind the leading content
  reason     TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (policy, out_path)
);
-- No index on status: no query needs one, and under ingest it cost a random page write per decision.
-- Every lookup by NAR asks for decisions with quorum; pending and blocked rows (most writes under
-- ingest) stay out of the index.
CREATE INDEX IF NOT EXISTS decisions_quorum_nar ON decisions (nar_hash) WHERE status = 'quorum';

-- NARs held by the blob store, keyed by narHash. A blob is written before its row (durable first).
CREATE TABLE IF NOT EXISTS nars (
  nar_hash    TEXT PRIMARY KEY,
  nar_size    INTEGER NOT NULL,
  blob_key    TEXT NOT NULL,
  compression TEXT NOT NULL,
  file_hash   TEXT NOT NULL,           -- sha256:<nix32> of the stored (compressed) bytes
  file_size   INTEGER NOT NULL,
  uploaded_by INTEGER REFERENCES builders(id),
  created_at  INTEGER NOT NULL,
  -- CRC-32 (zlib's) of the stored bytes, recorded at upload and checked on every whole download (a
  -- cheap check against a store that corrupts bytes; Nix itself checks NarHash). NULL for rows from
  -- before this column (their downloads are checked against file_hash) and for NARs held upstream
  -- (Nix fetches those from the upstream, never from here).
  file_crc32  INTEGER
) WITHOUT ROWID;

-- -- Web search ---------------------------------------------------------------------------------
-- A projection of the log for the web pages (src/web/webIndex.ts), built leaf by leaf in log order
-- and derivable from the attestations alone: `meta.web_indexed_leaves` is how many leaves it covers,
-- so a database from before these tables existed is caught up on start. Nothing else reads it.

-- One row per output path; id orders paths by first appearance and is the rowid in web_names.
CREATE TABLE IF NOT EXISTS web_paths (
  id        INTEGER PRIMARY KEY,
  out_path  TEXT NOT NULL UNIQUE,
  builders  INTEGER NOT NULL,          -- distinct keys that attested it (revoked ones included)
  contents  INTEGER NOT NULL,          -- distinct (narHash, narSize, references) attested
  class     TEXT NOT NULL CHECK (class IN ('single', 'reproduced', 'unreproduced')),
  last_leaf INTEGER NOT NULL           -- newest attestation of the path
);
CREATE INDEX IF NOT EXISTS web_paths_class ON web_paths (class, last_leaf);

-- Substring search over store path names (the part after "<hash>-"): trigram index, no stored text.
CREATE VIRTUAL TABLE IF NOT EXISTS web_names USING fts5(name, content='', columnsize=0, tokenize='trigram');

-- Paths per class, so the overview does not count a million rows.
CREATE TABLE IF NOT EXISTS web_class_counts (
  class TEXT PRIMARY KEY,
  paths INTEGER NOT NULL
) WITHOUT ROWID;

-- Per builder key: what it attested and how often another key signed the same content.
CREATE TABLE IF NOT EXISTS web_builder_stats (
  builder_id   INTEGER PRIMARY KEY REFERENCES builders(id),
  attestations INTEGER NOT NULL,
  paths        INTEGER NOT NULL,       -- output paths it attested
  shared       INTEGER NOT NULL,       -- of those, paths another key attested too
  agreed       INTEGER NOT NULL,       -- of those, paths where another key signed its (single) content
  equivocated  INTEGER NOT NULL,       -- paths where it signed two or more contents
  last_leaf    INTEGER NOT NULL
);

-- Paths advertised per policy (decision 'quorum' and its NAR held), kept by triggers: counting them
-- means joining every decision with the NARs, about a second on a million paths. src/web/webIndex.ts
-- recounts once (meta.web_advertised_counted) for a database from before these triggers.
CREATE TABLE IF NOT EXISTS web_advertised (
  policy TEXT PRIMARY KEY,
  paths  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS web_advertised_decision_insert AFTER INSERT ON decisions
  WHEN NEW.status = 'quorum' AND EXISTS (SELECT 1 FROM nars WHERE nar_hash = NEW.nar_hash)
BEGIN
  INSERT INTO web_advertised (policy, paths) VALUES (NEW.policy, 1) ON CONFLICT (policy) DO UPDATE SET paths = paths + 1;
END;
-- Only a change of status or NAR moves the count; an update of anything else (agreeing keys, the cache
-- Sig) fires nothing.
CREATE TRIGGER IF NOT EXISTS web_advertised_decision_change AFTER UPDATE OF status, nar_hash ON decisions BEGIN
  UPDATE web_advertised SET paths = paths - 1
    WHERE policy = OLD.policy AND OLD.status = 'quorum' AND EXISTS (SELECT 1 FROM nars WHERE nar_hash = OLD.nar_hash);
  INSERT INTO web_advertised (policy, paths)
    SELECT NEW.policy, 1 WHERE NEW.status = 'quorum' AND EXISTS (SELECT 1 FROM nars WHERE nar_hash = NEW.nar_hash)
    ON CONFLICT (policy) DO UPDATE SET paths = paths + 1;
END;
CREATE TRIGGER IF NOT EXISTS web_advertised_decision_delete AFTER DELETE ON decisions
  WHEN OLD.status = 'quorum' AND EXISTS (SELECT 1 FROM nars WHERE nar_hash = OLD.nar_hash)
BEGIN
  UPDATE web_advertised SET paths = paths - 1 WHERE policy = OLD.policy;
END;
CREATE TRIGGER IF NOT EXISTS web_advertised_nar_insert AFTER INSERT ON nars BEGIN
  INSERT INTO web_advertised (policy, paths)
    SELECT policy, COUNT(*) FROM decisions WHERE nar_hash = NEW.nar_hash AND status = 'quorum' GROUP BY policy
    ON CONFLICT (policy) DO UPDATE SET paths = paths + excluded.paths;
END;
CREATE TRIGGER IF NOT EXISTS web_advertised_nar_delete AFTER DELETE ON nars BEGIN
  UPDATE web_advertised SET paths = paths - (SELECT COUNT(*) FROM decisions d WHERE d.nar_hash = OLD.nar_hash AND d.status = 'quorum' AND d.policy = web_advertised.policy);
END;

-- -- Witness --------------------------------------------------------------------------------------
-- The tables of `nix-quorum witness` (src/witness/state.ts), in its own database (DATA/witness.sqlite);
-- a ledger's database has them empty, as the witness's has the ledger tables empty.

-- Per log origin, the latest checkpoint this witness cosigned: it only ever moves forward (a larger
-- tree proven consistent, or the same tree again), in the same transaction that checked it.
CREATE TABLE IF NOT EXISTS witness_logs (
  origin     TEXT PRIMARY KEY,
  tree_size  INTEGER NOT NULL,
  root_hash  BLOB NOT NULL,
  note       TEXT NOT NULL,            -- the checkpoint with the log signature lines that verified
  cosigned_at INTEGER NOT NULL         -- POSIX seconds: the timestamp of our cosignature
) WITHOUT ROWID;

-- Checkpoints the witness refused although the log had signed them, as evidence of a log showing
-- two histories: the submitted note and proof, and the log-signed checkpoint the witness held then.
CREATE TABLE IF NOT EXISTS witness_evidence (
  id           INTEGER PRIMARY KEY,
  origin       TEXT NOT NULL,
  received_at  INTEGER NOT NULL,       -- unix ms
  status       INTEGER NOT NULL,       -- the HTTP status answered (409 or 422)
  reason       TEXT NOT NULL,
  old_size     INTEGER NOT NULL,
  proof        TEXT NOT NULL,          -- the base64 proof lines, joined by "\n"
  note         TEXT NOT NULL,          -- the submitted checkpoint, as received
  witness_size INTEGER,                -- the witness's latest then (NULL: none)
  witness_note TEXT,
  UNIQUE (origin, note, old_size, proof)
);

-- The files of each stored NAR (path, type, size, offset, SHA-256 of contents), recorded while its
-- upload streamed through the NAR parser (src/nars/listings.ts): what `GET /<hash>.ls` serves and what
-- reproducibility diffs compare. A rowid table: listings are large blobs. Goes with its NAR's row.
CREATE TABLE IF NOT EXISTS nar_listings (
  nar_hash TEXT PRIMARY KEY,
  files    INTEGER NOT NULL,
  listing  BLOB NOT NULL               -- brotli-compressed JSON array of NarEntry (src/nix/nar/listing.ts)
);
CREATE TRIGGER IF NOT EXISTS nar_listings_nar_delete AFTER DELETE ON nars BEGIN
  DELETE FROM nar_listings WHERE nar_hash = OLD.nar_hash;
END;

-- Build logs builders delivered (src/logs/): one per derivation and builder key, brotli-compressed in
-- the blob store under log/<drv hash part>/<builder id>.br. Only a key that attested an output of the
-- derivation may deliver its log; it signs the upload (src/nars/uploadAuth.ts), and the signature is
-- kept so anyone can check that the served bytes are the builder's.
CREATE TABLE IF NOT EXISTS build_logs (
  drv_path    TEXT NOT NULL,
  builder_id  INTEGER NOT NULL REFERENCES builders(id),
  blob_key    TEXT NOT NULL,
  file_hash   TEXT NOT NULL,           -- sha256:<nix32> of the stored (compressed) bytes
  file_size   INTEGER NOT NULL,
  log_size    INTEGER NOT NULL,        -- bytes once decompressed
  signed_at   INTEGER NOT NULL,        -- the upload signature's unix seconds
  signature   BLOB NOT NULL,           -- Ed25519 over nix-quorum-log-v1;drvPath;file_hash;file_size;signed_at
  created_at  INTEGER NOT NULL,        -- unix ms
  PRIMARY KEY (drv_path, builder_id)
) WITHOUT ROWID;

-- -- Mirror ---------------------------------------------------------------------------------------
-- Used by `nix-quorum serve --follow` only (src/mirror/): leaves fetched from the primary but not yet
-- verified against a signed checkpoint's root, kept out of every table that is served.
CREATE TABLE IF NOT EXISTS mirror_staging (
  leaf_index INTEGER PRIMARY KEY,
  leaf       BLOB NOT NULL
);

-- What made the mirror stop following: the last checkpoint it verified and the one the primary
-- offered that does not extend it (a fork, a rollback, a tree that does not hash to its root, a leaf
-- that breaks a rule), both signed by the log's key.
CREATE TABLE IF NOT EXISTS mirror_evidence (
  id            INTEGER PRIMARY KEY,
  detected_at   INTEGER NOT NULL,       -- unix ms
  kind          TEXT NOT NULL,          -- fork | rollback | root-mismatch | bad-leaf
  detail        TEXT NOT NULL,
  verified_note TEXT,                   -- the last checkpoint verified (NULL: none yet)
  offered_note  TEXT NOT NULL,          -- the checkpoint that does not follow from it
  UNIQUE (kind, offered_note)
);
