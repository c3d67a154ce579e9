// Solves a harbour challenge off the main thread: finds a nonce (8 hex digits) such that
// SHA-256("{token}\n{key}\n{nonce}") starts with `bits` zero bits (see crates/core/src/phase/challenge.rs). A small
// SHA-256 of its own rather than crypto.subtle.digest: the search hashes one short message per
// try, and an awaited digest per try is several times slower (measured by the browser tests),
// and the blocks before the nonce are hashed once, not once per try.
"use strict";
const K = Uint32Array.of(
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2);
const W = new Int32Array(64);

// One SHA-256 compression of the 16 words at `words[at..]` into `h` (8 words).
function compress(h, words, at) {
  for (let i = 0; i < 16; i++) W[i] = words[at + i];
  for (let i = 16; i < 64; i++) {
    const a = W[i - 15], b = W[i - 2];
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
  }
  let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (k + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
  }
  h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + k) | 0;
}

const HEX = Array.from("0123456789abcdef", (c) => c.charCodeAt(0));

function search(token, key, bits) {
  const prefix = new TextEncoder().encode(`${token}\n${key}\n`);
  const length = prefix.length + 8;
  // The blocks before the nonce's, once.
  const done = prefix.length - (prefix.length % 64);
  const bytes = new Uint8Array(Math.ceil((length + 9) / 64) * 64);
  bytes.set(prefix);
  bytes[length] = 0x80;
  new DataView(bytes.buffer).setUint32(bytes.length - 4, length * 8);
  const words = new Int32Array(bytes.length / 4);
  const view = new DataView(bytes.buffer);
  const mid = Int32Array.of(0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19);
  const h = new Int32Array(8);
  const fill = () => { for (let i = 0; i < words.length; i++) words[i] = view.getInt32(i * 4); };
  fill();
  for (let at = 0; at < done; at += 64) compress(mid, words, at / 4);
  const at = prefix.length;
  const full = bits >= 32 ? 0 : -1 >>> bits ^ -1; // the high `bits` bits of the first word
  for (let n = 0; n <= 0xffffffff; n++) {
    for (let i = 0; i < 8; i++) bytes[at + i] = HEX[(n >>> (28 - 4 * i)) & 15];
    for (let i = at >> 2; i <= (at + 7) >> 2; i++) words[i] = view.getInt32(i * 4);
    h.set(mid);
    for (let block = done; block < bytes.length; block += 64) compress(h, words, block / 4);
    const zero = bits >= 32 ? h[0] === 0 && (bits === 32 || Math.clz32(h[1]) >= bits - 32) : (h[0] & full) === 0;
    if (zero) return { nonce: n.toString(16).padStart(8, "0"), hashes: n + 1 };
  }
  return null;
}

onmessage = (event) => {
  const { token, key, bits } = event.data;
  const started = performance.now();
  const found = search(token, key, bits);
  postMessage({ ...found, ms: performance.now() - started });
};
