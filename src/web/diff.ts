import { NarCatalog, isUpstreamKey } from '../nars/catalog.js';
import { diffListings, type FileDifference } from '../nars/diff.js';
import { NarListings } from '../nars/listings.js';
import type { NarEntry } from '../nix/nar/listing.js';
import type { Service } from '../service.js';
import type { PathData } from './model.js';

/**
 * Which files differ between the contents builders attested for an output: the agreement groups of
 * the path page, each with its NAR (if stored) and the listing made when that NAR was uploaded.
 * Listings come from the server's database, so this says what the server saw; anyone can check it
 * by fetching both NARs (whose hashes the builders signed) and comparing them.
 */

export interface DiffContent {
  /** The path page's agreement group. */
  label: string;
  narHash: string;
  narSize: number;
  references: string[];
  builders: string[];
  /** Where to download the NAR (uncompressed), or null if no builder uploaded it. */
  nar: { url: string } | null;
  /** Whether the NAR's files were listed at upload (not for NARs uploaded before listings, held upstream, or of too many files). */
  listed: boolean;
}

export interface OutputDiff {
  outPath: string;
  contents: DiffContent[];
  /** Contents also differ in their references (a file diff cannot show that). */
  referencesDiffer: boolean;
  /** Files not the same in every listed content; `versions` follow `contents`, skipping unlisted ones. */
  files: FileDifference[];
  /** How many files differ, also beyond those listed in `files`. */
  totalDifferences: number;
  /** Labels of the contents compared (those with a listing). */
  compared: string[];
}

export interface DiffData {
  hashPart: string;
  outputs: OutputDiff[];
}

export async function diffData(service: Service, path: PathData): Promise<DiffData> {
  const catalog = new NarCatalog(service.db);
  const listings = new NarListings(service.db);
  const outputs = await Promise.all(
    path.outputs.map(async (o): Promise<OutputDiff> => {
      const contents = await Promise.all(
        o.groups.map(async (g) => {
          const record = catalog.get(g.narHash);
          const listing = record && !isUpstreamKey(record.blobKey) ? await listings.get(g.narHash) : undefined;
          const content: DiffContent = {
            label: g.label,
            narHash: g.narHash,
            narSize: g.narSize,
            references: g.references,
            builders: g.builders,
            nar: record ? { url: `/api/v1/nars/${g.narHash}` } : null,
            listed: listing !== undefined,
          };
          return { content, listing };
        }),
      );
      const listed = contents.filter((c): c is { content: DiffContent; listing: NarEntry[] } => c.listing !== undefined);
      const { files, total } = listed.length > 1 ? diffListings(listed.map((c) => c.listing)) : { files: [], total: 0 };
      return {
        outPath: o.outPath,
        contents: contents.map((c) => c.content),
        referencesDiffer: new Set(o.groups.map((g) => g.references.join(','))).size > 1,
        files,
        totalDifferences: total,
        compared: listed.map((c) => c.content.label),
      };
    }),
  );
  return { hashPart: path.hashPart, outputs };
}
