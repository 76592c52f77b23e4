/**
 * Bulk-loads synthetic attestations into a ledger the way Ingestor.commit writes them, through the
 * same code where there is code: attestation rows, MerkleLog.append over encodeLeaf (the tree is
 * the real tree of those leaves), DecisionMaterializer.recompute, NarCatalog.add, and a signed
 * checkpoint per batch. Verifying every attestation through HTTP would take hours at 10M, so rows
 * skip the ingest path.
 *
 * The shape: derivations with 1-3 outputs (out, dev, man), 0-5 references to earlier paths, every
 * path attested by every loaded builder with the same content (a batch holds each key's
 * attestations in turn, as builders that lag each other would), and every path's NAR catalogued.
 * A builder given with its secret key signs its statements for real and carries no narinfo
 * signature (a mirror verifies every leaf: bench/mirror). One without has random 64-byte
 * signatures, as long as real ones (the server never re-verifies stored rows: bench/scale), and
 * half its attestations carry a random narinfo signature.
 */
import type { Statement } from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import type { Attestation, StatementFields } from '../src/ledger/statement.js';
import { statementText } from '../src/ledger/statement.js';
import { encodeLeaf } from '../src/ledger/leaf.js';
import type { Builder } from '../src/ledger/registry.js';
import { NarCatalog } from '../src/nars/catalog.js';
import { narBlobKey } from '../src/nars/upload.js';
import type { NarHash } from '../src/nix/hash.js';
import { signRaw, type SecretKey } from '../src/nix/keys.js';
import type { StorePath } from '../src/nix/storePath.js';
import type { Service } from '../src/service.js';
import { randomNarHash, randomPackageName, randomStorePath } from './common.js';

/** Attestations per load transaction. */
const BATCH = 50_000;
/** Paths a new path may reference: the most recent ones (references point at earlier paths). */
const REFERENCE_POOL = 20_000;

export interface LoadedBuilder {
  builder: Builder;
  /** Signs for real when given (see the file comment). */
  secretKey: SecretKey | null;
}

export class BulkLoader {
  leaves = 0;
  /** Ring buffer of the most recent paths, the candidates for references. */
  private readonly recent: StorePath[] = [];
  private recentNext = 0;
  private service!: Service;
  private catalog!: NarCatalog;
  private insert!: Statement<unknown[]>;
  /** Seconds spent per part of a batch, for the report. */
  readonly seconds = { generate: 0, attestations: 0, nars: 0, merkle: 0, decisions: 0, commit: 0, checkpoint: 0 };

  constructor(
    service: Service,
    private readonly builders: LoadedBuilder[],
  ) {
    this.use(service);
  }

  /** Loads through this service from now on (the ledger is closed and reopened between stages). */
  use(service: Service): void {
    this.service = service;
    this.catalog = new NarCatalog(service.db);
    // Ingestor.commit's INSERT; its duplicate check is skipped because every generated row is new.
    this.insert = service.db.prepare(
      `INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, narinfo_signature, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
  }

  /** Loads batches until the log holds `target` attestations loaded here, yielding between batches (so Ctrl-C cleans up). */
  async loadTo(target: number): Promise<void> {
    const started = process.hrtime.bigint();
    const from = this.leaves;
    while (this.leaves < target) {
      this.batch(Math.min(BATCH, target - this.leaves));
      await new Promise((resolve) => setImmediate(resolve));
      const s = Number(process.hrtime.bigint() - started) / 1e9;
      process.stderr.write(`\rloaded ${this.leaves} attestations, ${Math.round((this.leaves - from) / s)}/s`);
    }
    // The cache Sigs of the last batches are made in the signature pool; measure with them stored.
    await this.service.decisions.signaturesStored();
    process.stderr.write('\n');
  }

  private batch(count: number): void {
    const { db, log, decisions, checkpoints } = this.service;
    let t = process.hrtime.bigint();
    const lap = (part: keyof BulkLoader['seconds']) => {
      const now = process.hrtime.bigint();
      this.seconds[part] += Number(now - t) / 1e9;
      t = now;
    };
    const paths: StatementFields[] = [];
    while (paths.length * this.builders.length < count) paths.push(...this.derivation());
    lap('generate');
    const start = log.size();
    db.transaction(() => {
      const leaves: Buffer[] = [];
      const now = Date.now();
      // Each key's attestations of the batch in turn; when paths * keys overshoots `count`, the last
      // key leaves the final few paths out (they still reach a threshold below the builder count).
      for (const { builder, secretKey } of this.builders) {
        for (const p of paths) {
          if (leaves.length === count) break;
          const a: Attestation = {
            ...p,
            builder: builder.name,
            signature: secretKey ? signRaw(secretKey, statementText(p)) : randomBytes(64),
            narinfoSignature: !secretKey && Math.random() < 0.5 ? `${builder.name}:${randomBytes(64).toString('base64')}` : null,
          };
          this.insert.run(start + leaves.length, builder.id, a.drvPath, a.outputName, a.outPath, a.narHash, a.narSize, a.references.join(','), a.signature, a.narinfoSignature, now);
          leaves.push(encodeLeaf(a));
        }
      }
      lap('attestations');
      for (const p of paths) {
        const fileSize = Math.ceil(p.narSize / 3);
        this.catalog.add({ narHash: p.narHash, narSize: p.narSize, blobKey: narBlobKey(p.narHash, 'br'), compression: 'br', fileHash: randomNarHash(), fileSize, fileCrc32: null }, this.builders[0]!.builder.id);
      }
      lap('nars');
      log.append(start, leaves);
      lap('merkle');
      decisions.recompute(new Set(paths.map((p) => p.outPath)));
      lap('decisions');
    })();
    lap('commit');
    this.leaves += count;
    checkpoints.publish();
    lap('checkpoint');
  }

  /** One derivation's outputs, each referencing 0-5 earlier paths. */
  private derivation(): StatementFields[] {
    const name = randomPackageName();
    const drvPath = randomStorePath(`${name}.drv`) as StorePath;
    const r = Math.random();
    const outputs = r < 0.7 ? ['out'] : r < 0.9 ? ['out', 'dev'] : ['out', 'dev', 'man'];
    const specs = outputs.map((outputName): StatementFields => {
      const references = new Set<StorePath>();
      const wanted = Math.floor(Math.random() * 6);
      for (let i = 0; i < wanted && this.recent.length > 0; i++) references.add(this.recent[Math.floor(Math.random() * this.recent.length)]!);
      return {
        drvPath,
        outputName,
        outPath: randomStorePath(outputName === 'out' ? name : `${name}-${outputName}`) as StorePath,
        narHash: randomNarHash() as NarHash,
        // Log-uniform from 1 KB to 100 MB.
        narSize: Math.round(10 ** (3 + 5 * Math.random())),
        references: [...references].sort(),
      };
    });
    for (const s of specs) {
      this.recent[this.recentNext] = s.outPath;
      this.recentNext = (this.recentNext + 1) % REFERENCE_POOL;
    }
    return specs;
  }
}
