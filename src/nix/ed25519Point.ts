/**
 * Which 32-byte strings are acceptable Ed25519 public keys for a builder (RFC 8032 5.1.3 decoding,
 * plus the small-order check of "Taming the many EdDSAs", Chalkias et al. 2020).
 *
 * Why it matters: verifiers disagree on keys outside the canonical, full-order set. With a
 * small-order key (the identity point above all) a signature can be made without any secret, so
 * registering one would let anybody attest as that builder; a non-canonical encoding (y >= p, or
 * "negative zero" x) is a second spelling of another key, so one signer could register twice.
 * Rare and off the hot path (registration, key files), so BigInt arithmetic is fine here.
 */

const P = 2n ** 255n - 19n;
const D = mod(-121665n * inverse(121666n));
const SQRT_M1 = power(2n, (P - 1n) / 4n);

function mod(a: bigint): bigint {
  const r = a % P;
  return r < 0n ? r + P : r;
}

function power(base: bigint, exponent: bigint): bigint {
  let result = 1n;
  let b = mod(base);
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return result;
}

function inverse(a: bigint): bigint {
  return power(a, P - 2n);
}

/** Why `raw` is not a canonical Ed25519 point of more than small order, or undefined if it is one. */
export function publicKeyProblem(raw: Uint8Array): string | undefined {
  if (raw.length !== 32) return `it has ${raw.length} bytes, not 32`;
  // 1. Little-endian y with the top bit as the sign of x.
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(raw[i]!);
  const sign = y >> 255n;
  y &= (1n << 255n) - 1n;
  // 2. y must be reduced: y >= p is a second spelling of y - p.
  if (y >= P) return 'it is not canonically encoded (y >= 2^255 - 19)';
  // 3. x^2 = (y^2 - 1) / (d y^2 + 1) must have a root, or the string is no point at all.
  const u = mod(y * y - 1n);
  const v = mod(D * y * y + 1n);
  let x = mod(u * power(v, 3n) * power(u * power(v, 7n), (P - 5n) / 8n));
  const vx2 = mod(v * x * x);
  if (vx2 !== u) {
    if (vx2 !== mod(-u)) return 'it is not a point on the Ed25519 curve';
    x = mod(x * SQRT_M1);
  }
  // 4. x = 0 has one spelling only: a set sign bit there is "negative zero".
  if (x === 0n && sign === 1n) return 'it is not canonically encoded (negative zero x)';
  if ((x & 1n) !== sign) x = P - x;
  // 5. [8]P = identity for exactly the eight points of small order.
  let point = { X: x, Y: y, Z: 1n };
  for (let i = 0; i < 3; i++) point = double(point);
  if (point.X === 0n && point.Y === point.Z) return 'it is a point of small order (anybody could sign for it)';
  return undefined;
}

/** Point doubling in projective coordinates on -x^2 + y^2 = 1 + d x^2 y^2 (RFC 8032 5.1.4). */
function double({ X, Y, Z }: { X: bigint; Y: bigint; Z: bigint }) {
  const A = mod(X * X);
  const B = mod(Y * Y);
  const C = mod(2n * Z * Z);
  const H = mod(A + B);
  const E = mod(H - mod((X + Y) * (X + Y)));
  const G = mod(A - B);
  const F = mod(C + G);
  return { X: mod(E * F), Y: mod(G * H), Z: mod(F * G) };
}
