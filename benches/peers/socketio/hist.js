// A latency histogram in microseconds with 3 significant digits, laid out
// like HdrHistogram (exact below 2048, then 1024 sub-buckets per power of
// two), so that its percentiles read like `herald bench`'s (hdrhistogram
// crate, 3 significant digits, value_at_quantile = highest equivalent value).
// Fixed size, no allocation per sample, mergeable across worker processes.
"use strict";

const SUB = 1024; // sub-buckets per power of two above 2048
const EXACT = 2 * SUB; // values below this are counted exactly
const MAX_US = 2 ** 31 - 1; // 36 minutes; longer samples count as this
const MAX_SHIFT = 21; // 31 - 10: the largest shift MAX_US needs
const BUCKETS = EXACT + MAX_SHIFT * SUB;

function indexOf(us) {
  const v = Math.min(MAX_US, Math.max(1, Math.floor(us)));
  if (v < EXACT) return v;
  const shift = 31 - Math.clz32(v) - 10;
  return EXACT + (shift - 1) * SUB + (Math.floor(v / 2 ** shift) - SUB);
}

/** Highest value counted in bucket `i` (what HdrHistogram reports). */
function highestOf(i) {
  if (i < EXACT) return i;
  const shift = Math.floor((i - EXACT) / SUB) + 1;
  const sub = ((i - EXACT) % SUB) + SUB;
  return (sub + 1) * 2 ** shift - 1;
}

class Histogram {
  constructor() {
    this.counts = new Float64Array(BUCKETS);
    this.total = 0;
    this.max = 0;
  }

  record(us) {
    this.counts[indexOf(us)] += 1;
    this.total += 1;
    if (us > this.max) this.max = us;
  }

  /** Sparse form, [[index, count], ...], to send between processes. */
  toSparse() {
    const out = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i] > 0) out.push([i, this.counts[i]]);
    return { buckets: out, total: this.total, max: this.max };
  }

  addSparse(s) {
    for (const [i, c] of s.buckets) this.counts[i] += c;
    this.total += s.total;
    if (s.max > this.max) this.max = s.max;
  }

  add(other) {
    this.addSparse(other.toSparse());
  }

  valueAtQuantile(q) {
    if (this.total === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(highestOf(i), Math.round(this.max));
    }
    return Math.round(this.max);
  }

  /** The same fields as `herald bench --json` writes under "latency". */
  json() {
    return {
      samples: this.total,
      p50_us: this.valueAtQuantile(0.5),
      p90_us: this.valueAtQuantile(0.9),
      p99_us: this.valueAtQuantile(0.99),
      p999_us: this.valueAtQuantile(0.999),
      max_us: Math.round(this.max),
    };
  }

  /** The same text as `herald bench` prints after "emit-to-deliver:". */
  line() {
    const j = this.json();
    return `p50 ${j.p50_us} us  p90 ${j.p90_us} us  p99 ${j.p99_us} us  p99.9 ${j.p999_us} us  max ${j.max_us} us`;
  }
}

module.exports = { Histogram, indexOf, highestOf };
